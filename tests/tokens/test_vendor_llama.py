"""The `llama3.1` built-in (the official Hugging Face template) against llama_models' own Llama 3
encoder, ``ChatFormat.encode_dialog_prompt``, token id for token id.

The vendor encoder is a raw one: it writes each message's content as given between
``<|start_header_id|>role<|end_header_id|>\\n\\n`` and ``<|eot_id|>``; the system prompt (date
header, tool definitions) is the caller's business. The HF template writes more. So the
comparison has three parts, each counted over the same seeded, generated conversations:

* raw: the vendor given the messages as they are: equal on none (the HF template always opens
  with a system block holding "Cutting Knowledge Date: ...\\nToday Date: ...").
* given the date header: the vendor given that header as its system message: equal on every
  conversation without tool calls.
* tool calls and results: equal only once the vendor is given the HF call text as content and
  the result as JSON; the vendor's own call text is asserted exactly (``{"type": "function",
  "name", "parameters"}`` by ``json.dumps``, the content kept, ``<|eom_id|>`` on
  ``end_of_message``), and so is its raw result text.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings

from template_forge.format.spec import load_builtin
from template_forge.tokens.encoder import encode

from strategies import agentic_conversations

pytest.importorskip("llama_models")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

M = int(os.environ.get("TFORGE_VENDOR_EXAMPLES", "120"))
DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
WORDS = ["hi", "the", "city", "Paris", "été", "日本", "🙂", "42", "a.b", "x,y", "<tag>", "ok!", "well\nthen"]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def _call(rng: random.Random, k: int) -> dict:
    args = {key: rng.choice([_text(rng), rng.randint(-5, 500), True, None])
            for key in rng.sample(["city", "q", "n"], rng.randint(0, 3))}
    return {"id": f"call{k}", "type": "function", "function": {"name": rng.choice(["get_weather", "search"]),
                                                               "arguments": args}}


def conversation(seed: int, *, max_calls: int = 1) -> list[dict]:
    """Optional system, 1-3 rounds of user, 0-1 tool-call round (1..max_calls calls; llama3.1
    takes one), assistant answer; even seeds have no tool calls."""
    rng = random.Random(seed)
    msgs = [{"role": "system", "content": _text(rng)}] if rng.random() < 0.5 else []
    for r in range(rng.randint(1, 3)):
        msgs.append({"role": "user", "content": _text(rng)})
        if seed % 2 and rng.random() < 0.7:
            calls = [_call(rng, 10 * r + k) for k in range(rng.randint(1, max_calls))]
            content = rng.choice(["", _text(rng)]) if max_calls > 1 else ""
            msgs.append({"role": "assistant", "content": content, "tool_calls": calls})
            msgs += [{"role": "tool", "tool_call_id": c["id"], "content": _text(rng)} for c in calls]
        msgs.append({"role": "assistant", "content": _text(rng)})
    return msgs


def has_calls(msgs: list[dict]) -> bool:
    return any(m.get("tool_calls") for m in msgs)


# ---------------------------------------------------------------- the vendor encoder
_fmt = None


def chat_format():
    global _fmt
    if _fmt is None:
        from llama_models.llama3.chat_format import ChatFormat
        from llama_models.llama3.tokenizer import Tokenizer

        _fmt = ChatFormat(Tokenizer.get_instance())
    return _fmt


def hf_call_text(call: dict) -> str:
    """What the HF template (and llama3.1) writes for a call: tojson, i.e. ensure_ascii=False."""
    f = call["function"]
    return '{"name": "' + f["name"] + '", "parameters": ' + json.dumps(f["arguments"], ensure_ascii=False) + "}"


def to_vendor(msgs: list[dict], *, date: bool, hf_calls: bool = False, stop: str = "end_of_turn") -> list:
    """RawMessages for ChatFormat. date: open with the HF system block's text as the system
    message; hf_calls: give calls as the HF text (content) and results as JSON, as HF writes them."""
    from llama_models.datatypes import RawMessage, StopReason, ToolCall

    out = []
    if date:
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
        out.append(RawMessage(role="system", content=DATE + system))
    for m in msgs:
        if m["role"] == "system" and date:
            continue
        if m.get("tool_calls") and hf_calls:
            out.append(RawMessage(role="assistant", content=hf_call_text(m["tool_calls"][0]),
                                  stop_reason=StopReason.end_of_turn))
        elif m.get("tool_calls"):
            calls = [ToolCall(call_id=c["id"], tool_name=c["function"]["name"],
                              arguments=c["function"]["arguments"]) for c in m["tool_calls"]]
            out.append(RawMessage(role="assistant", content=m["content"], tool_calls=calls,
                                  stop_reason=StopReason(stop)))
        elif m["role"] == "tool":
            out.append(RawMessage(role="tool", content=json.dumps(m["content"], ensure_ascii=False) if hf_calls else m["content"]))
        else:
            out.append(RawMessage(role=m["role"], content=m["content"], stop_reason=StopReason.end_of_turn))
    return out


def vendor_ids(raw: list) -> list[int]:
    """encode_dialog_prompt, less the assistant header it always appends (ours ends at the answer)."""
    fmt = chat_format()
    tokens = fmt.encode_dialog_prompt(raw).tokens
    header = fmt._encode_header("assistant")
    assert tokens[-len(header):] == header
    return tokens[:-len(header)]


@pytest.fixture(scope="module")
def ours(real_tokenizer):
    spec, folder = load_builtin("llama3.1"), real_tokenizer("llama3")
    return lambda msgs: encode(spec, folder, msgs).input_ids.tolist()


# ---------------------------------------------------------------- where they agree, counted
def test_raw_messages_agree_on_none_the_hf_date_header_is_always_there(ours):
    seeds = range(M)
    equal = sum(ours(conversation(s)) == vendor_ids(to_vendor(conversation(s), date=False)) for s in seeds)
    assert equal == 0, f"{equal} equal of {M}"


def test_given_the_date_header_they_agree_on_every_conversation_without_tool_calls(ours):
    plain = [conversation(s) for s in range(0, 2 * M, 2)]
    assert not any(map(has_calls, plain))
    equal = sum(ours(m) == vendor_ids(to_vendor(m, date=True)) for m in plain)
    assert equal == len(plain), f"{equal} equal of {len(plain)}"


def test_with_tool_calls_they_agree_once_given_the_hf_call_text_and_json_results(ours):
    agentic = [m for m in (conversation(s) for s in range(1, 2 * M, 2)) if has_calls(m)]
    assert len(agentic) > M // 3
    own = sum(ours(m) == vendor_ids(to_vendor(m, date=True)) for m in agentic)
    given = sum(ours(m) == vendor_ids(to_vendor(m, date=True, hf_calls=True)) for m in agentic)
    assert (own, given) == (0, len(agentic)), f"own call text: {own}, HF call text: {given} equal of {len(agentic)}"


# ---------------------------------------------------------------- the differences, exactly
def _message_text(raw_message, stop="end_of_turn") -> str:
    from llama_models.datatypes import ToolPromptFormat

    fmt = chat_format()
    return fmt.tokenizer.decode(fmt.encode_message(raw_message, ToolPromptFormat.json)[0])


@pytest.mark.parametrize("stop,end", [("end_of_turn", "<|eot_id|>"), ("end_of_message", "<|eom_id|>")])
def test_the_vendor_call_text_is_type_name_parameters_by_json_dumps_content_kept(stop, end):
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
    raw = to_vendor([{"role": "assistant", "content": "Let me check.", "tool_calls": [call]}], date=False, stop=stop)
    assert _message_text(raw[0]) == (
        "<|start_header_id|>assistant<|end_header_id|>\n\nLet me check."
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Z\\u00fcrich"}}' + end)
    # the HF template (llama3.1): no content, no "type", ensure_ascii=False, always <|eot_id|>
    from template_forge.format.render import render

    text = render(load_builtin("llama3.1"), [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}],
                  add_generation_prompt=False).text
    assert text.endswith('<|start_header_id|>assistant<|end_header_id|>\n\n'
                         '{"name": "get_weather", "parameters": {"city": "Zürich"}}<|eot_id|>')


def test_the_vendor_writes_a_result_as_is_hf_writes_it_as_json():
    raw = to_vendor([{"role": "tool", "content": "sunny"}], date=False)
    assert _message_text(raw[0]) == "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
    from template_forge.format.render import render

    text = render(load_builtin("llama3.1"), [{"role": "user", "content": "q"}, {"role": "tool", "content": "sunny"}],
                  add_generation_prompt=False).text
    assert text.endswith('<|start_header_id|>ipython<|end_header_id|>\n\n"sunny"<|eot_id|>')


def test_the_vendor_does_not_trim_content_hf_does(ours):
    msgs = [{"role": "user", "content": " hi\n"}, {"role": "assistant", "content": "ok "}]
    trimmed = [{"role": m["role"], "content": m["content"].strip()} for m in msgs]
    assert ours(msgs) == vendor_ids(to_vendor(trimmed, date=True)) != vendor_ids(to_vendor(msgs, date=True))


# ---------------------------------------------------------------- Llama 4: llama_models.llama4's ChatFormat
_fmt4 = None


def chat_format4():
    global _fmt4
    if _fmt4 is None:
        import sys
        from unittest import mock

        stand_ins = {}
        try:
            import torchvision  # noqa: F401  (llama4.chat_format imports its image preprocessing)
        except ImportError:  # text only here: a stand-in while importing, so the package need not be
            # installed, taken out again after (a MagicMock left in sys.modules breaks `datasets`)
            stand_ins = {"torchvision": mock.MagicMock(), "torchvision.transforms": mock.MagicMock()}
        sys.modules.update(stand_ins)
        try:
            from llama_models.llama4.chat_format import ChatFormat
            from llama_models.llama4.tokenizer import Tokenizer
        finally:  # only the stand-ins go: what the import loaded (torch, PIL) stays
            for name in stand_ins:
                sys.modules.pop(name, None)

        _fmt4 = ChatFormat(Tokenizer.get_instance())
    return _fmt4


def to_vendor4(msgs: list[dict]) -> list:
    """RawMessages for llama4's ChatFormat, as given (it has no date header or tool prompt)."""
    from llama_models.datatypes import RawMessage, StopReason, ToolCall

    out = []
    for m in msgs:
        calls = [ToolCall(call_id=c["id"], tool_name=c["function"]["name"], arguments=c["function"]["arguments"])
                 for c in m.get("tool_calls") or []]
        out.append(RawMessage(role=m["role"], content=m["content"], tool_calls=calls,
                              stop_reason=StopReason.end_of_turn))
    return out


def vendor4_ids(raw: list) -> list[int]:
    fmt = chat_format4()
    tokens = fmt.encode_dialog_prompt(raw).tokens
    header = fmt._encode_header("assistant")
    assert tokens[-len(header):] == header
    return tokens[:-len(header)]


def vendor4_with_hf_calls(msgs: list[dict]) -> list[int]:
    """The vendor's own pieces (headers, text encoding, special ids), with the call turns and
    results written as the HF template writes them: <|python_start|>content<|python_end|>,
    {"name", "parameters"} per call, results as JSON, every turn ending <|eot|>."""
    fmt = chat_format4()
    special, text = fmt.tokenizer.special_tokens, (lambda s: fmt.tokenizer.encode(s, bos=False, eos=False))
    tokens = [special["<|begin_of_text|>"]]
    for m in msgs:
        tokens += fmt._encode_header("ipython" if m["role"] == "tool" else m["role"])
        if m.get("tool_calls"):
            tokens += [special["<|python_start|>"], *text(m["content"]), special["<|python_end|>"]]
            tokens += text("".join(map(hf_call_text, m["tool_calls"])))
        else:
            tokens += text(json.dumps(m["content"], ensure_ascii=False) if m["role"] == "tool" else m["content"])
        tokens.append(special["<|eot|>"])
    return tokens


@pytest.fixture(scope="module")
def ours4(real_tokenizer):
    spec, folder = load_builtin("llama-4"), real_tokenizer("llama4")
    return lambda msgs: encode(spec, folder, msgs).input_ids.tolist()


def test_llama4_plain_conversations_agree_on_every_one(ours4):
    """Content goes in as given in both (the generated system text has no outer whitespace,
    which the HF template would trim), the system block only when there is a system message."""
    plain = [conversation(s) for s in range(0, 2 * M, 2)]
    equal = sum(ours4(m) == vendor4_ids(to_vendor4(m)) for m in plain)
    assert equal == len(plain), f"{equal} equal of {len(plain)}"


def test_llama4_tool_calls_agree_only_written_as_the_hf_template_writes_them(ours4):
    agentic = [m for m in (conversation(s, max_calls=3) for s in range(1, 2 * M, 2)) if has_calls(m)]
    assert len(agentic) > M // 3
    own = sum(ours4(m) == vendor4_ids(to_vendor4(m)) for m in agentic)
    given = sum(ours4(m) == vendor4_with_hf_calls(m) for m in agentic)
    assert (own, given) == (0, len(agentic)), f"own: {own}, HF call text: {given} equal of {len(agentic)}"


def test_llama4_vendor_call_and_result_text_exactly():
    """llama4's ChatFormat: content, then each call by llama3's ToolUtils (json.dumps with
    "type"), no <|python_start|>/<|python_end|>, and <|eom|> after calls and after results."""
    fmt = chat_format4()
    from llama_models.datatypes import ToolPromptFormat

    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
    msgs = [{"role": "assistant", "content": "Let me check.", "tool_calls": [call, {**call, "id": "d"}]},
            {"role": "tool", "content": "sunny"}]
    texts = [fmt.tokenizer.decode(fmt.encode_message(r, ToolPromptFormat.json)[0]) for r in to_vendor4(msgs)]
    one = '{"type": "function", "name": "get_weather", "parameters": {"city": "Z\\u00fcrich"}}'
    assert texts == ["<|header_start|>assistant<|header_end|>\n\nLet me check." + one + one + "<|eom|>",
                     "<|header_start|>ipython<|header_end|>\n\nsunny<|eom|>"]
    from template_forge.format.render import render

    hf = render(load_builtin("llama-4"), [{"role": "user", "content": "q"}, *msgs], add_generation_prompt=False).text
    mine = '{"name": "get_weather", "parameters": {"city": "Zürich"}}'
    assert hf.endswith("<|header_start|>assistant<|header_end|>\n\n<|python_start|>Let me check.<|python_end|>"
                       + mine + mine + '<|eot|><|header_start|>ipython<|header_end|>\n\n"sunny"<|eot|>')


@settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", "25")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations())
def test_llama4_agentic_ids_and_mask_equal_transformers(real_tokenizer, conv):
    """With its own tokenizer: the encoder's ids and loss mask are transformers' with the
    compiled training template (whole-string tokenization, mask from {% generation %})."""
    from test_encoder import hf_tokenizer, vocab

    from template_forge.errors import RenderError
    from template_forge.format.compiler import compile_template
    from template_forge.format.render import render
    from template_forge.tokens.encoder import Encoder

    messages, tools = conv
    spec = load_builtin("llama-4")
    try:
        render(spec, messages, tools=tools)
    except RenderError:
        assume(False)
    folder = real_tokenizer("llama4")
    out = hf_tokenizer(folder).apply_chat_template(
        messages, tools=tools, chat_template=compile_template(spec, training=True), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    got = Encoder(spec, vocab(folder), parse_special=True).encode({"messages": messages, "tools": tools})
    assert got.input_ids.tolist() == out["input_ids"]
    assert got.loss_mask.tolist() == out["assistant_masks"]


# ---------------------------------------------------------------- llama3.1-models: the vendor's own format
@pytest.fixture(scope="module")
def ours_models(real_tokenizer):
    spec, folder = load_builtin("llama3.1-models"), real_tokenizer("llama3")
    return lambda msgs: encode(spec, folder, msgs).input_ids.tolist()


def _content_and_calls(msgs: list[dict]) -> bool:
    return any(m.get("tool_calls") and m["content"] for m in msgs)


def test_llama3_1_models_equals_chat_format_ids_on_every_conversation(ours_models):
    """ChatFormat tokenizes the content and each call apart; so does llama3.1-models
    (``tokenize_apart``): the same ids on every conversation."""
    convs = [conversation(s, max_calls=3) for s in range(2 * M)]
    assert all(ours_models(m) == vendor_ids(to_vendor(m, date=False)) for m in convs)
    assert sum(map(has_calls, convs)) > M // 3


def test_llama3_1_models_tokenized_whole_differs_only_at_a_content_call_seam(real_tokenizer):
    """The same format tokenizing its text whole (as transformers does with the compiled
    template): the same text on every conversation, the same ids on every one without a turn
    holding both content and calls; where the content's end and ``{"`` merge, the ids differ
    (6 of 240 here)."""
    from dataclasses import replace

    spec, folder = replace(load_builtin("llama3.1-models"), tokenize_apart=False), real_tokenizer("llama3")
    decode = chat_format().tokenizer.decode
    convs = [conversation(s, max_calls=3) for s in range(2 * M)]
    pairs = [(encode(spec, folder, m).input_ids.tolist(), vendor_ids(to_vendor(m, date=False))) for m in convs]
    assert all(decode(a) == decode(b) for a, b in pairs)
    seam = [a == b for (a, b), m in zip(pairs, convs, strict=True) if _content_and_calls(m)]
    rest = [a == b for (a, b), m in zip(pairs, convs, strict=True) if not _content_and_calls(m)]
    assert sum(rest) == len(rest) and 0 < len(seam) - sum(seam) < len(seam), (sum(rest), sum(seam), len(seam))


def test_llama3_1_models_compiled_renders_as_the_renderer():
    from template_forge.format.compiler import compile_template
    from template_forge.format.render import render

    hf = pytest.importorskip("transformers.utils.chat_template_utils")
    spec = load_builtin("llama3.1-models")
    for training in (False, True):
        template = compile_template(spec, training=training)
        for s in range(0, 2 * M, 3):
            m = conversation(s, max_calls=3)
            got = hf.render_jinja_template(conversations=[m], chat_template=template, add_generation_prompt=True)
            assert got[0][0] == render(spec, m, add_generation_prompt=True).text


# ---------------------------------------------------------------- llama-4-models, and tokenize_apart
#: text without `|` (no special-token string can form); padded: leading and trailing whitespace, empty
ALPHABET = list("abc xyz.,!?'\"\\\n0129éß日🙂<>[]{}_:")


def _chars(rng: random.Random) -> str:
    while True:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24))).strip()
        if text:
            return text


def _padded(rng: random.Random) -> str:
    return (rng.choice(["", "", " ", "\n", "\n\n", " \t"]) + _chars(rng) * rng.randint(0, 1)
            + rng.choice(["", "", " ", "\n", ".\n"]))


def _value(rng: random.Random):
    """ChatFormat's argument type: primitives, lists of them, and mappings of them."""
    def primitive():
        return rng.choice([None, True, False, rng.randint(-5, 10**6), _chars(rng)])

    kind = rng.randrange(4)
    if kind == 0:
        return [primitive() for _ in range(rng.randint(0, 3))]
    if kind == 1:
        return {rng.choice(["a", "b", "ключ", 'q"']): primitive() for _ in range(rng.randint(0, 3))}
    return primitive()


def chatformat_conversation(rng: random.Random, *, padded: bool = False) -> list[dict]:
    """An optional system message, 1-3 rounds of a user turn, 0-2 turns of 1-2 calls (arguments
    as objects and as JSON strings) each answered by its results (`tool` or `ipython`), an
    answer; the last round may stop at the results."""
    text = _padded if padded else _chars
    msgs = [{"role": "system", "content": text(rng)}] if rng.random() < 0.5 else []
    ids = iter(range(10**6))
    for _ in range(rng.randint(1, 3)):
        msgs.append({"role": "user", "content": text(rng)})
        for _ in range(rng.randint(0, 2)):
            calls = []
            for _ in range(rng.randint(1, 2)):
                args = {rng.choice(["city", "q", "n"]): _value(rng) for _ in range(rng.randint(0, 3))}
                if rng.random() < 0.3:
                    args = json.dumps(args, ensure_ascii=rng.random() < 0.5)
                calls.append({"id": f"call{next(ids)}", "type": "function",
                              "function": {"name": rng.choice(["get_weather", "search"]), "arguments": args}})
            content = rng.choice(["", "", "Let me check.", "ok"] + ([" \n", "\nso"] if padded else []))
            msgs.append({"role": "assistant", "content": content, "tool_calls": calls})
            msgs += [{"role": rng.choice(["tool", "ipython"]), "tool_call_id": c["id"], "content": text(rng)}
                     for c in calls]
        msgs.append({"role": "assistant", "content": text(rng)})
    if rng.random() < 0.25 and msgs[-2]["role"] in ("tool", "ipython"):
        msgs.pop()  # end at the results: the model's turn comes next
    return msgs


def chatformat_conversations(seed: int, *, padded: bool = False) -> list[list[dict]]:
    rng = random.Random(seed)
    return [chatformat_conversation(rng, padded=padded) for _ in range(2 * M)]


def _as_tool_role(msgs: list[dict]) -> list[dict]:
    """ChatFormat's RawMessage has no `ipython` role: its `tool` role is written as ipython."""
    return [{**m, "role": "tool"} if m["role"] == "ipython" else m for m in msgs]


def test_llama4_models_equals_chat_format_ids_on_every_conversation(real_tokenizer):
    """Calls (one or two a turn, after content or none), results as `tool` and `ipython`,
    answers, padded and empty contents: llama-4-models gives ChatFormat's ids every time."""
    spec, folder = load_builtin("llama-4-models"), real_tokenizer("llama4")
    for padded in (False, True):
        convs = chatformat_conversations(4, padded=padded)
        equal = sum(encode(spec, folder, m).input_ids.tolist() == vendor4_ids(to_vendor4(_as_tool_role(m)))
                    for m in convs)
        assert equal == len(convs), f"{equal} equal of {len(convs)} (padded={padded})"
    assert sum(map(has_calls, convs)) > M


def test_llama4_models_tokenized_whole_differs_at_the_seams(real_tokenizer):
    """Tokenized whole (as transformers does with the compiled template), the text is
    ChatFormat's and the ids differ where a BPE merge spans content|call or call|call; a
    conversation whose call turns hold one call and no content has no such merge."""
    from dataclasses import replace

    spec, folder = replace(load_builtin("llama-4-models"), tokenize_apart=False), real_tokenizer("llama4")
    decode = chat_format4().tokenizer.decode
    convs = chatformat_conversations(4)
    seamless = [all(not t["content"] and len(t["tool_calls"]) == 1 for t in m if t.get("tool_calls")) for m in convs]
    pairs = [(encode(spec, folder, m).input_ids.tolist(), vendor4_ids(to_vendor4(_as_tool_role(m)))) for m in convs]
    assert all(decode(a) == decode(b) for a, b in pairs)
    assert all(a == b for (a, b), s in zip(pairs, seamless) if s)
    differ = sum(a != b for a, b in pairs)
    assert 0 < differ < len(pairs) - sum(seamless) + 1, (differ, len(pairs))


def test_tokenize_apart_engines_and_alignments_agree(real_tokenizer):
    """The tiktoken and tokenizers engines, and the masks from byte lengths and from the
    tokenizer's own offsets, agree on pieces cut at the breaks; special-token strings in
    content stay text, or are parsed with ``parse_special``; the trained tokens are exactly
    the trained text (a break at every content boundary)."""
    from test_encoder import vocab

    from template_forge.format.render import render
    from template_forge.tokens.encoder import Encoder
    from template_forge.tokens.vocab import Vocab

    spec, folder = load_builtin("llama-4-models"), real_tokenizer("llama4")
    fast, hf = vocab(folder), Vocab(folder, engine="hf")
    slow = Vocab(folder, engine="hf")
    slow.lengths_exact = False
    convs = chatformat_conversations(6, padded=True)[:40]
    convs[0] = convs[0] + [{"role": "user", "content": "say <|eot|> and\n<|header_start|>"}]
    assert fast.engine == "tiktoken"
    for m in convs:
        outs = [Encoder(spec, x).encode(m) for x in (fast, hf, slow)]
        assert all(o.input_ids.tolist() == outs[0].input_ids.tolist() for o in outs)
        assert all(o.loss_mask.tolist() == outs[0].loss_mask.tolist() for o in outs)
        parsed = [Encoder(spec, x, parse_special=True).encode(m) for x in (fast, slow)]
        assert parsed[0].input_ids.tolist() == parsed[1].input_ids.tolist()
        assert parsed[0].loss_mask.tolist() == parsed[1].loss_mask.tolist()
        r = render(spec, m)
        trained = b"".join(fast.token_bytes(t) for t, k in zip(outs[0].input_ids.tolist(), outs[0].loss_mask.tolist())
                           if k)
        assert trained.decode() == "".join(r.text[a:b] for a, b in r.trained_spans())
    eot = fast.control["<|eot|>"]
    ids = Encoder(spec, fast).encode(convs[0]).input_ids.tolist()
    assert Encoder(spec, fast, parse_special=True).encode(convs[0]).input_ids.tolist().count(eot) == ids.count(eot) + 1


def test_the_llama4_file_converts_with_llama4s_specials_and_regex_by_itself(real_tokenizer, tmp_path):
    """``tforge convert-tokenizer`` tells Llama 4's tiktoken file from Llama 3's by its size
    (200000 base tokens): the result is the tokenizer built from llama_models' own lists
    (conftest's ``llama4``), and encodes as llama_models' Tokenizer does."""
    from click.testing import CliRunner
    from llama_models.llama4.tokenizer import Tokenizer

    from conftest import REAL_TOKENIZERS, _vendor_file
    from template_forge.cli import main
    from template_forge.tokens.convert import LLAMA4_PATTERN, llama4_special_tokens
    from template_forge.tokens.vocab import Vocab

    vendor = Tokenizer.get_instance()
    assert LLAMA4_PATTERN == Tokenizer.O200K_PATTERN
    assert {t: 200_000 + i for i, t in enumerate(llama4_special_tokens())} == vendor.special_tokens
    source = _vendor_file(*REAL_TOKENIZERS["llama4"][:2])
    result = CliRunner().invoke(main, ["convert-tokenizer", str(source), "-o", str(tmp_path / "tok")])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    reference = json.loads((real_tokenizer("llama4") / "tokenizer.json").read_text())
    assert ours == reference
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["eos_token"] == "<|eot|>"
    v = Vocab(tmp_path / "tok")
    rng = random.Random(4)
    pieces = ALPHABET + ["<|eot|>", "<|header_start|>", "'s", "ABC", " Hello World", "\t", "\r\n", "  "]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert v.tok.encode(text, add_special_tokens=False).ids == vendor.encode(
            text, bos=False, eos=False, allowed_special="all")
