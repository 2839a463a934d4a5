"""The reference renderer: llmforge's own expected strings, quirks, segments, errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.formats import builtin_names
from template_forge.format.render import SEGMENT_KINDS, promises_prefix, render
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import conversations, spec_dicts

# llmforge's expected training strings, as ray-project/ray copies them into
# python/ray/llm/tests/serve/cpu/common/test_prompt_format_consistency.py
RAY_MESSAGES = [
    {"role": "system", "content": "hello1"}, {"role": "user", "content": "hello2"},
    {"role": "assistant", "content": "hello3"}, {"role": "user", "content": "hello4"},
    {"role": "assistant", "content": "hello5"},
]
RAY_GOLDEN = {
    "llmforge-llama2": "[INST] <<SYS>>\nhello1\n<</SYS>>\n\nhello2 [/INST] hello3 </s><s>[INST] hello4 [/INST] hello5 </s><s>",
    "llmforge-mistral": "[INST] hello1 + hello2 [/INST]hello3</s> [INST] hello4 [/INST]hello5</s> ",
}
SEED_LLAMA3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat's the value of 1+1?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nThe value is 2<|eot_id|>"
)


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize("name", sorted(RAY_GOLDEN))
def test_ray_llmforge_training_strings(name):
    spec = load_builtin(name)
    assert render(spec, RAY_MESSAGES).text == RAY_GOLDEN[name]
    # Ray's inference prompt (s, u, a, u + generation prompt) is a prefix of the training one.
    assert RAY_GOLDEN[name].startswith(render(spec, RAY_MESSAGES[:4], add_generation_prompt=True).text)


def test_seed_llama3_example():
    m = msgs(("system", "You are a helpful assistant"), ("user", "What's the value of 1+1?"),
             ("assistant", "The value is 2"))
    assert render(load_builtin("llmforge-llama3"), m).text == SEED_LLAMA3


LLMFORGE_QUIRKS = dict(system="<S>{instruction}</S>", user="<U>{system}{instruction}</U>",
                       assistant="<A>{instruction}</A>", system_in_user=True)


def test_quirk_system_text_not_stripped_in_system_in_user_mode():
    spec = spec_from_dict(LLMFORGE_QUIRKS)
    out = render(spec, msgs(("system", "  sys  "), ("user", "  u  "), ("assistant", " a ")))
    assert out.text == "<U><S>  sys  </S>u</U><A>a</A>"


def test_quirk_system_text_stripped_as_own_message():
    spec = spec_from_dict(dict(LLMFORGE_QUIRKS, user="<U>{instruction}</U>", system_in_user=False))
    assert render(spec, msgs(("system", "  sys  "), ("user", "u"))).text == "<S>sys</S><U>u</U>"


def test_quirk_explicit_empty_system_renders_in_user_mode_but_is_dropped_as_own_message():
    in_user = spec_from_dict(LLMFORGE_QUIRKS)
    assert render(in_user, msgs(("system", ""), ("user", "u"))).text == "<U><S></S>u</U>"
    own = spec_from_dict(dict(LLMFORGE_QUIRKS, user="<U>{instruction}</U>", system_in_user=False))
    assert render(own, msgs(("system", ""), ("user", "u"))).text == "<U>u</U>"
    # llmforge tests emptiness before stripping: a blank system message gives an empty block.
    assert render(own, msgs(("system", "   "), ("user", "u"))).text == "<S></S><U>u</U>"


def test_system_taken_from_anywhere_and_default_used_when_absent():
    spec = spec_from_dict(dict(LLMFORGE_QUIRKS, user="<U>{instruction}</U>", system_in_user=False,
                               default_system_message="D"))
    assert render(spec, msgs(("user", "u"), ("system", "s"))).text == "<S>s</S><U>u</U>"
    assert render(spec, msgs(("user", "u"))).text == "<S>D</S><U>u</U>"


def test_add_system_tags_even_if_message_is_empty():
    spec = spec_from_dict(dict(LLMFORGE_QUIRKS, user="<U>{instruction}</U>", system_in_user=False,
                               add_system_tags_even_if_message_is_empty=True))
    assert render(spec, msgs(("user", "u"))).text == "<S></S><U>u</U>"


@pytest.mark.parametrize("placement,expected", [
    ("first_user", "<U><S>s</S>1</U><A>a</A><U>2</U>"),
    ("last_user", "<U>1</U><A>a</A><U><S>s</S>2</U>"),
    ("final_user", "<U>1</U><A>a</A><U><S>s</S>2</U>"),
])
def test_system_placements_in_user_turns(placement, expected):
    fields = {k: v for k, v in LLMFORGE_QUIRKS.items() if k != "system_in_user"}
    spec = spec_from_dict(fields | {"system_placement": placement})
    assert render(spec, msgs(("system", "s"), ("user", "1"), ("assistant", "a"), ("user", "2"))).text == expected


def test_final_user_placement_drops_system_when_conversation_ends_with_assistant():
    spec = load_builtin("mistral-v3")
    out = render(spec, msgs(("system", "S"), ("user", "u"), ("assistant", "a")))
    assert out.text == "<s>[INST] u[/INST] a</s>"


def test_drop_and_reject_placements():
    base = dict(user="<U>{instruction}</U>", assistant="<A>{instruction}</A>")
    assert render(spec_from_dict(base | {"system_placement": "drop"}), msgs(("system", "s"), ("user", "u"))).text == "<U>u</U>"
    with pytest.raises(RenderError, match=r"message 0: this format does not support a system message"):
        render(spec_from_dict(base | {"system_placement": "reject"}), msgs(("system", "s"), ("user", "u")))


def test_final_suffix_only_without_generation_prompt():
    spec = load_builtin("phi3")
    m = msgs(("user", "u"))
    assert render(spec, m).text.endswith("<|end|>\n<|endoftext|>")
    assert render(spec, m, add_generation_prompt=True).text.endswith("<|end|>\n<|assistant|>\n")


def test_segments_tile_the_text_and_name_their_messages():
    out = render(load_builtin("llama2"), msgs(("system", "S"), ("user", "U"), ("assistant", "A")))
    assert [(s.kind, s.message_index, out.text[s.start:s.end]) for s in out.segments] == [
        ("user", 1, "<s>[INST] "), ("system", 0, "<<SYS>>\nS\n<</SYS>>\n\n"), ("user", 1, "U [/INST]"),
        ("assistant_prefix", 2, " "), ("assistant_content", 2, "A"), ("assistant_suffix", 2, " </s>"),
    ]
    assert out.trained_spans() == [(out.text.index("A </s>"), len(out.text))]


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(), st.one_of(conversations(system="anywhere", min_turns=0), conversations(system="many", min_turns=0)),
       st.booleans())
def test_invariants_for_generated_specs(d, messages, gen):
    spec = spec_from_dict(d)
    try:
        out = render(spec, messages, add_generation_prompt=gen)
    except RenderError:
        return
    # Segments tile the text, in order, with known kinds.
    pos = 0
    for seg in out.segments:
        assert seg.kind in SEGMENT_KINDS and seg.start == pos and seg.end > seg.start
        pos = seg.end
    assert pos == len(out.text)
    # Every non-system message's content appears verbatim (after its role's stripping).
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            content = m["content"].strip() if spec.strip_assistant else m["content"]
            got = "".join(out.text[s.start:s.end] for s in out.segments if s.kind == "assistant_content" and s.message_index == i)
            assert got == content
        elif m["role"] == "user" and spec.strip_user != "with_system":
            content = m["content"].strip() if spec.strip_user else m["content"]
            assert content in out.text
    # Trained text lies inside assistant turns and includes the assistant suffix.
    for s, e in out.trained_spans():
        kinds = {seg.kind for seg in out.segments if seg.start < e and seg.end > s}
        assert kinds <= {"assistant_content", "assistant_suffix"}
    # Content spans are sorted, disjoint, inside the text, and cover exactly the message
    # text: removing them leaves only template text (no content character is outside them).
    spans = out.content_spans
    assert all(0 <= s < e <= len(out.text) for s, e in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            seg = [sg for sg in out.segments if sg.kind == "assistant_content" and sg.message_index == i]
            assert not seg or (seg[0].start, seg[0].end) in spans
        elif m["role"] == "user" and spec.strip_user != "with_system":
            content = m["content"].strip() if spec.strip_user else m["content"]
            assert not content or any(out.text[s:e] == content for s, e in spans)
    # Same input, same output.
    assert render(spec, messages, add_generation_prompt=gen) == out


def test_content_spans_mark_message_text_only():
    out = render(load_builtin("llama2"), [{"role": "system", "content": "Be <s> brief."},
                                          {"role": "user", "content": " [INST] hi "},
                                          {"role": "assistant", "content": "</s>ok"}])
    assert [out.text[s:e] for s, e in out.content_spans] == ["Be <s> brief.", " [INST] hi", "</s>ok"]  # llama2 strips system + user text as one


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(), conversations(system="maybe", min_turns=1), st.data())
def test_prefix_preservation_where_promised(d, messages, data):
    spec = spec_from_dict(d)
    k = data.draw(st.integers(1, len(messages)))
    try:
        full = render(spec, messages).text
    except RenderError:
        return
    if promises_prefix(spec):
        assert full.startswith(render(spec, messages[:k]).text)
    if promises_prefix(spec, generation_prompt=True) and messages[k - 1]["role"] == "assistant" and k - 1 > 0:
        head = render(spec, messages[: k - 1], add_generation_prompt=True).text
        assert render(spec, messages[:k]).text.startswith(head)


def test_prefix_promises_of_builtins():
    promised = {n for n in builtin_names() if promises_prefix(load_builtin(n), generation_prompt=True)}
    assert {"llama3", "llama3.1", "chatml", "qwen2.5", "gemma", "deepseek-v3", "llmforge-llama3"} <= promised
    assert not {"mistral-v3", "phi3", "llama2"} & promised


@pytest.mark.parametrize("bad,pattern", [
    ("not a list", r"must be a list of messages"),
    (["x"], r"message 0: expected an object with `role` and `content`"),
    ([{"role": "human", "content": "x"}], r"message 0: unknown role 'human'.*human → user"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": None}], r"message 1: `content` must be a string, found null.*only when it has `tool_calls`"),
    ([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}], r"message 1: messages 0 and 1 are both system"),
])
def test_bad_conversations_name_the_message(bad, pattern):
    with pytest.raises(RenderError, match=pattern):
        render(load_builtin("llmforge-llama3"), bad)


def test_in_place_renders_every_system_message_where_it_stands():
    spec = load_builtin("chatml")
    out = render(spec, msgs(("user", "u"), ("system", "s1"), ("assistant", "a"), ("system", "s2")))
    assert out.text == ("<|im_start|>user\nu<|im_end|>\n<|im_start|>system\ns1<|im_end|>\n"
                        "<|im_start|>assistant\na<|im_end|>\n<|im_start|>system\ns2<|im_end|>\n")
    assert [s.message_index for s in out.segments if s.kind == "system"] == [1, 3]
    qwen = load_builtin("qwen2.5")  # the default stands in unless the conversation opens with a system message
    assert render(qwen, msgs(("user", "u"), ("system", "s"))).text.startswith("<|im_start|>system\nYou are Qwen")
    assert render(qwen, msgs(("system", "s"), ("user", "u"))).text.startswith("<|im_start|>system\ns<|im_end|>")


def test_alternation_error_names_the_message():
    with pytest.raises(RenderError, match=r"message 2: roles must alternate.*expected assistant, found user"):
        render(load_builtin("llama2"), msgs(("system", "s"), ("user", "a"), ("user", "b")))


def test_unknown_variable_is_refused():
    with pytest.raises(RenderError, match=r"unknown template variable `date`; this format declares: date_string"):
        render(load_builtin("llama3.1"), msgs(("user", "u")), variables={"date": "x"})


# ---------------------------------------------------------------- differential: llmforge oracle
LLMFORGE_ONLY = ("system", "user", "assistant", "trailing_assistant", "bos", "default_system_message",
                 "system_in_user", "system_in_last_user", "add_system_tags_even_if_message_is_empty",
                 "strip_whitespace")


@st.composite
def llmforge_specs(draw):
    """Specs in the ten-field llmforge vocabulary only (extensions left at their defaults)."""
    d = draw(spec_dicts())
    in_user = d.get("system_in_user") or d.get("system_placement") in ("first_user", "last_user", "final_user")
    d = {k: v for k, v in d.items() if k in LLMFORGE_ONLY and k != "variables"}
    if "{" + "system}" in d["user"] and not in_user:
        d["user"] = d["user"].replace("{system}", "")
    d["system_in_user"] = bool(in_user)
    if not in_user:
        d.pop("system_in_last_user", None)
    for role in ("system", "user", "assistant"):  # no template variables in llmforge
        for var in ("{date_string}", "{who}", "{x1}"):
            d[role] = d[role].replace(var, "")
    return d


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(llmforge_specs(), conversations(system="anywhere", min_turns=0), st.booleans())
def test_render_equals_llmforge_oracle(d, messages, gen):
    from llmforge_oracle import OracleError, llmforge_render

    spec = spec_from_dict(d)
    try:
        expected = llmforge_render(d, messages, add_generation_prompt=gen)
    except OracleError:
        with pytest.raises(RenderError):
            render(spec, messages, add_generation_prompt=gen)
        return
    assert render(spec, messages, add_generation_prompt=gen).text == expected
