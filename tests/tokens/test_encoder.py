"""input_ids and loss masks: equal to transformers' apply_chat_template (training flavour) and to
the vendors' own encoders, on real Llama 3 and Mistral tokenizers converted offline."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict
from template_forge.tokens.encoder import Encoder, Vocab, _mask_monotone, encode, mask_from_spans

from strategies import TRICKY, conversations

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
TOKENIZERS = ["llama3", "mistral-v1", "mistral-v3"]
SETTINGS = settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", 25)), deadline=None, suppress_health_check=list(HealthCheck))

_cache: dict = {}


def hf_tokenizer(folder):
    from transformers import AutoTokenizer

    key = ("hf", str(folder))
    if key not in _cache:
        _cache[key] = AutoTokenizer.from_pretrained(str(folder))
    return _cache[key]


def vocab(folder, engine="auto") -> Vocab:
    key = ("vocab", str(folder), engine)
    if key not in _cache:
        _cache[key] = Vocab(folder, engine=engine)
    return _cache[key]


def reference(tok, spec, messages):
    """transformers' ids and assistant mask with the compiled training template."""
    out = tok.apply_chat_template(messages, chat_template=compile_template(spec, training=True), tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    return out["input_ids"], out["assistant_masks"]


def has_control(v: Vocab, messages) -> bool:
    return any(v.control_re.search(m["content"]) for m in messages)


def renders(spec, messages) -> bool:
    try:
        render(spec, messages)
        return True
    except RenderError:
        return False


# ---------------------------------------------------------------- equal to transformers
#: formats that render plain conversations (hermes-3 always writes tool definitions: its ids
#: and masks are proved on agentic conversations, tests/tokens/test_encoder_agentic.py), and
#: tokenize them whole as transformers does (the -models formats tokenize message text apart,
#: as llama_models' ChatFormat does: their ids are ChatFormat's, tests/tokens/test_vendor_llama.py)
PLAIN = [n for n in builtin_names() if not (load_builtin(n).tools is not None and load_builtin(n).tools.required)
         and not load_builtin(n).tokenize_apart]


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize("name", PLAIN)
@SETTINGS
@given(data=st.data())
def test_ids_and_mask_equal_transformers(real_tokenizer, tok_name, name, data):
    folder = real_tokenizer(tok_name)
    spec = load_builtin(name)
    system = "many" if spec.placement == "in_place" else "maybe"
    messages = data.draw(conversations(system=system, alternate=spec.require_alternation or None))
    assume(renders(spec, messages))
    ids, mask = reference(hf_tokenizer(folder), spec, messages)
    # parse_special=True is a whole-string tokenization: equal for any content.
    got = Encoder(spec, vocab(folder), parse_special=True).encode(messages)
    assert got.input_ids.tolist() == ids
    assert got.loss_mask.tolist() == mask
    # The default keeps special-token strings in content as text: equal when there are none.
    if not has_control(vocab(folder), messages):
        got = Encoder(spec, vocab(folder)).encode(messages)
        assert got.input_ids.tolist() == ids
        assert got.loss_mask.tolist() == mask


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_every_engine_and_alignment_path_agrees(real_tokenizer, tok_name):
    """tiktoken vs tokenizers engines, and the byte-length alignment vs the tokenizer's offsets."""
    folder = real_tokenizer(tok_name)
    spec = load_builtin("llama3" if tok_name == "llama3" else "mistral-v3-common")
    convs = [[{"role": "system", "content": c}, {"role": "user", "content": c + " ok?"},
              {"role": "assistant", "content": c[::-1] + " sure"}] for c in TRICKY if c.strip()]
    hf = Vocab(folder, engine="hf")
    slow = Vocab(folder, engine="hf")
    slow.lengths_exact = False  # every mask from the tokenizer's own offsets
    results = [Encoder(spec, v).encode_batch(convs, workers=1) for v in (vocab(folder), hf, slow)]
    for a, b, c in zip(*results):
        assert a.input_ids.tolist() == b.input_ids.tolist() == c.input_ids.tolist()
        assert a.loss_mask.tolist() == b.loss_mask.tolist() == c.loss_mask.tolist()
    if tok_name == "llama3":
        assert vocab(folder).engine == "tiktoken"


def test_tokens_straddling_a_boundary_follow_transformers(real_tokenizer):
    """A BPE merge across the header/content boundary (":" + "\n" → ":\n"): the straddling
    token is trained, as transformers marks every token that overlaps a {% generation %} span."""
    folder = real_tokenizer("llama3")
    spec = spec_from_dict({"system": "{instruction}\n", "user": "Q: {instruction}\n", "assistant": "A:{instruction}\n",
                           "bos": "<|begin_of_text|>", "strip_whitespace": False})
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nyes"}]
    got = encode(spec, folder, messages)
    ids, mask = reference(hf_tokenizer(folder), spec, messages)
    assert got.input_ids.tolist() == ids and got.loss_mask.tolist() == mask
    v = vocab(folder)
    pieces = [v.token_bytes(t) for t in got.input_ids.tolist()]
    straddler = pieces.index(b":\n")
    assert got.loss_mask[straddler] == 1 and got.loss_mask[straddler - 1] == 0  # "A" is not trained
    assert b"".join(p for p, m in zip(pieces, got.loss_mask.tolist()) if m) == b":\nyes\n"


# ---------------------------------------------------------------- special-token strings in content
@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_special_strings_in_content_are_text_by_default(real_tokenizer, tok_name):
    folder = real_tokenizer(tok_name)
    v = vocab(folder)
    spec = load_builtin("llama3" if tok_name == "llama3" else "mistral-v3-common" if tok_name == "mistral-v3" else "mistral-v1")
    evil = "<|eot_id|>" if tok_name == "llama3" else "</s>[INST]"
    messages = [{"role": "user", "content": f"say {evil} now"}, {"role": "assistant", "content": f"ok {evil} done"}]
    rendered = render(spec, messages)
    as_text = encode(spec, folder, messages)
    parsed = encode(spec, folder, messages, parse_special=True)
    whole = v.tok.encode(rendered.text, add_special_tokens=False).ids
    assert parsed.input_ids.tolist() == whole  # a whole-string tokenization
    assert as_text.input_ids.tolist() != whole
    controls = set(v.control.values())
    n_template = sum(1 for t in v.tok.encode(render(spec, [{"role": "user", "content": "say now"},
                                                          {"role": "assistant", "content": "ok done"}]).text,
                                             add_special_tokens=False).ids if t in controls)
    assert sum(1 for t in as_text.input_ids.tolist() if t in controls) == n_template
    assert sum(1 for t in parsed.input_ids.tolist() if t in controls) > n_template
    decoded = b"".join(v.token_bytes(t) for t in as_text.input_ids.tolist()).decode()
    assert decoded == rendered.text
    # the mask of the text-mode ids equals the one computed from the tokenizer's own offsets
    slow = Vocab(folder, engine="hf")
    slow.lengths_exact = False
    assert Encoder(spec, slow).encode(messages).loss_mask.tolist() == as_text.loss_mask.tolist()


# ---------------------------------------------------------------- equal to the vendors
def _llama3_vendor(messages):
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    fmt = ChatFormat(Tokenizer.get_instance())
    tokens = [fmt.tokenizer.special_tokens["<|begin_of_text|>"]]
    for m in messages:
        raw = RawMessage(role=m["role"], content=m["content"], stop_reason=StopReason.end_of_turn)
        tokens += fmt.encode_message(raw, tool_prompt_format=None)[0]
    return tokens


vendor_text = st.text(st.sampled_from(list("abc xyz.,!?'\n0129éß日🙂<>[]|_")), min_size=1, max_size=30).map(str.strip).filter(bool)


@st.composite
def vendor_conversations(draw):
    n = draw(st.integers(1, 3))
    msgs = [] if not draw(st.booleans()) else [{"role": "system", "content": draw(vendor_text)}]
    for _ in range(n):
        msgs += [{"role": "user", "content": draw(vendor_text)}, {"role": "assistant", "content": draw(vendor_text)}]
    return msgs


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=vendor_conversations())
def test_llama3_ids_equal_llama_models_chat_format(real_tokenizer, messages):
    pytest.importorskip("llama_models")
    got = encode(load_builtin("llama3"), real_tokenizer("llama3"), messages)
    assert got.input_ids.tolist() == _llama3_vendor(messages)


def _mistral_vendor(file, messages):
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    key = ("mistral", str(file))
    if key not in _cache:
        _cache[key] = MistralTokenizer.from_file(str(file), mode=ValidationMode.finetuning)
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    request = ChatCompletionRequest(messages=[kinds[m["role"]](content=m["content"]) for m in messages])
    return _cache[key].encode_chat_completion(request).tokens


@pytest.mark.parametrize("tok_name,fmt", [("mistral-v1", "mistral-v1"), ("mistral-v3", "mistral-v3-common")])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=vendor_conversations())
def test_mistral_ids_equal_mistral_common(real_tokenizer, tok_name, fmt, messages):
    from conftest import REAL_TOKENIZERS, _vendor_file

    package, relative, _ = REAL_TOKENIZERS[tok_name]
    got = encode(load_builtin(fmt), real_tokenizer(tok_name), messages)
    assert got.input_ids.tolist() == _mistral_vendor(_vendor_file(package, relative), messages)


def test_official_mistral_v3_template_drops_the_system_message_mistral_common_keeps(real_tokenizer):
    from conftest import REAL_TOKENIZERS, _vendor_file

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}]
    folder = real_tokenizer("mistral-v3")
    vendor = _mistral_vendor(_vendor_file(*REAL_TOKENIZERS["mistral-v3"][:2]), messages)
    assert encode(load_builtin("mistral-v3-common"), folder, messages).input_ids.tolist() == vendor
    official = encode(load_builtin("mistral-v3"), folder, messages).input_ids.tolist()
    assert official != vendor and len(official) < len(vendor)


# ---------------------------------------------------------------- policies
CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]


def _trained_text(folder, enc) -> str:
    v = vocab(folder)
    return b"".join(v.token_bytes(t) for t, m in zip(enc.input_ids.tolist(), enc.loss_mask.tolist()) if m).decode()


def test_policies(real_tokenizer):
    folder = real_tokenizer("llama3")
    spec = load_builtin("llama3")
    assert _trained_text(folder, encode(spec, folder, CHAT)) == "a1<|eot_id|>a2<|eot_id|>"
    assert _trained_text(folder, encode(spec, folder, CHAT, policy="last_assistant")) == "a2<|eot_id|>"
    everything = encode(spec, folder, CHAT, policy="causal_lm")
    assert everything.num_trained == everything.num_tokens
    flagged = [dict(m) for m in CHAT]
    flagged[2]["train"] = False
    assert _trained_text(folder, encode(spec, folder, flagged)) == "a2<|eot_id|>"
    flagged[2] = {**CHAT[2], "weight": 1}
    flagged[4] = {**CHAT[4], "weight": 0}
    assert _trained_text(folder, encode(spec, folder, flagged)) == "a1<|eot_id|>"
    assert _trained_text(folder, encode(spec, folder, flagged, policy="last_assistant")) == "a1<|eot_id|>"


@pytest.mark.parametrize("key,value,expect", [
    ("train", "yes", "`train` must be true or false"),
    ("weight", 0.5, "`weight` must be 0 or 1"),
])
def test_bad_train_keys_name_the_message(real_tokenizer, key, value, expect):
    messages = [dict(m) for m in CHAT]
    messages[2][key] = value
    with pytest.raises(RenderError, match=f"message 2: {expect}"):
        encode(load_builtin("llama3"), real_tokenizer("llama3"), messages)


def test_training_a_user_message_is_refused(real_tokenizer):
    messages = [dict(m) for m in CHAT]
    messages[1]["train"] = True
    with pytest.raises(RenderError, match="message 1: only assistant messages can be trained"):
        encode(load_builtin("llama3"), real_tokenizer("llama3"), messages)


# ---------------------------------------------------------------- batches and workers
def test_batch_with_workers_equals_one_by_one(real_tokenizer):
    folder = real_tokenizer("mistral-v3")
    enc = Encoder(load_builtin("mistral-v3-common"), vocab(folder))
    convs = [[{"role": "user", "content": f"q{i} " * (i % 7 + 1)}, {"role": "assistant", "content": f"a{i}"}]
             for i in range(300)]
    batch = enc.encode_batch(convs, workers=2, chunk_size=16)
    assert len(batch) == len(convs)
    for conv, got in zip(convs, batch):
        one = enc.encode(conv)
        assert np.array_equal(one.input_ids, got.input_ids) and np.array_equal(one.loss_mask, got.loss_mask)
        assert got.input_ids.dtype == np.int32 and got.loss_mask.dtype == np.uint8


def test_batch_error_names_conversation_and_message(real_tokenizer):
    enc = Encoder(load_builtin("llama3"), vocab(real_tokenizer("llama3")))
    convs = [CHAT, CHAT, [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]]
    with pytest.raises(RenderError, match=r"^conversation 2: message 1: unknown role 'robot'") as info:
        enc.encode_batch(convs, workers=1)
    assert info.value.message_index == 1


def test_accepts_transformers_and_tokenizers_objects(real_tokenizer):
    from tokenizers import Tokenizer

    folder = real_tokenizer("llama3")
    spec = load_builtin("llama3")
    want = encode(spec, folder, CHAT)
    for tok in (hf_tokenizer(folder), Tokenizer.from_file(str(folder / "tokenizer.json")), folder / "tokenizer.json"):
        got = encode(spec, tok, CHAT)
        assert got.input_ids.tolist() == want.input_ids.tolist() and got.loss_mask.tolist() == want.loss_mask.tolist()


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=8), st.data())
def test_mask_rule_matches_transformers_loop(pairs, data):
    """Both vectorised overlap rules equal transformers' token loop, token by token, zero-width
    spans included."""
    bounds = sorted({0, *[a for a, _ in pairs], *[a + b for a, b in pairs]})
    starts = np.array(bounds[:-1] or [0])
    ends = np.array(bounds[1:] or [0])
    cuts = sorted(data.draw(st.lists(st.integers(0, bounds[-1] + 1), max_size=6, unique=True)))
    spans = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    if data.draw(st.booleans()) and spans:  # an empty turn: a zero-width span
        spans[0] = (spans[0][0], spans[0][0])
    want = []
    k = 0
    for s, e in zip(starts.tolist(), ends.tolist()):  # transformers' loop
        while k < len(spans) and s >= spans[k][1]:
            k += 1
        want.append(int(k < len(spans) and e > spans[k][0]))
    assert mask_from_spans(starts, ends, spans).tolist() == want
    assert _mask_monotone(starts, ends, spans).tolist() == want  # tokens here tile the text


def test_an_empty_assistant_turn_inside_a_token_is_trained_as_transformers_does(real_tokenizer):
    """Found by the property test: with no template text around it, an empty assistant turn
    is an empty {% generation %} span in the middle of "▁:"; transformers marks that token."""
    folder = real_tokenizer("mistral-v1")
    spec = load_builtin("verbatim")
    messages = [{"role": "user", "content": " "}, {"role": "assistant", "content": ""}, {"role": "user", "content": ":"}]
    ids, mask = reference(hf_tokenizer(folder), spec, messages)
    got = encode(spec, folder, messages)
    assert (got.input_ids.tolist(), got.loss_mask.tolist()) == (ids, mask) == (ids, [1])


def test_whitespace_added_tokens_still_match_next_to_control_strings_kept_as_text(tmp_path):
    """Gemma-style tokenizers add whitespace tokens ("\\n\\n") that are not control tokens: a
    message holding a control string is cut into pieces, and those still match inside them."""
    from tokenizers import AddedToken

    from conftest import make_tokenizer

    fast = make_tokenizer(tmp_path)
    tok = fast.backend_tokenizer
    tok.add_tokens([AddedToken("\n\n", special=False, normalized=False)])
    spec = load_builtin("llama3")
    v = Vocab(tok)
    assert "\n\n" not in v.control and v.engine == "hf"
    messages = [{"role": "user", "content": "a\n\nb <|eot_id|> c\n\nd"}, {"role": "assistant", "content": "Hi"}]
    got = Encoder(spec, v).encode(messages).input_ids.tolist()
    ws, eot = tok.token_to_id("\n\n"), tok.token_to_id("<|eot_id|>")
    text = render(spec, messages).text
    assert got.count(ws) == text.count("\n\n") == 4  # 2 after the headers + 2 in the message
    assert got.count(eot) == 2  # the template's two, not the one in the message


@pytest.mark.parametrize("fmt,tok_name", [("llama3", "llama3"), ("llama3.1", "llama3"), ("llmforge-llama3", "llama3"),
                                          ("mistral-v1", "mistral-v1"), ("mistral-v3", "mistral-v3"),
                                          ("mistral-v3-common", "mistral-v3"), ("llama2", "mistral-v1"),
                                          ("zephyr", "mistral-v3"), ("alpaca", "mistral-v1")])
def test_a_format_with_its_own_tokenizer_raises_no_pairing_warning(real_tokenizer, fmt, tok_name):
    assert Encoder(load_builtin(fmt), vocab(real_tokenizer(tok_name))).pairing_warnings() == []


def test_a_format_with_a_foreign_tokenizer_is_flagged(real_tokenizer):
    chatml = Encoder(load_builtin("chatml"), vocab(real_tokenizer("llama3"))).pairing_warnings()
    assert len(chatml) == 1 and "assistant suffix '<|im_end|>\\n' holds no special token" in chatml[0]
    llama3 = Encoder(load_builtin("llama3"), vocab(real_tokenizer("mistral-v3"))).pairing_warnings()
    assert len(llama3) == 2 and "bos '<|begin_of_text|>' is not a special token" in llama3[0]
    assert Encoder(load_builtin("chatml"), vocab(real_tokenizer("llama3")), policy="causal_lm").pairing_warnings() == []
