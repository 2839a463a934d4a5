"""DeepSeek V3.1 (`deepseek-v3.1`): generated agentic conversations with every call's
arguments a JSON string (the official template joins them as text), the `thinking` switch on,
off and defaulted, with and without the generation prompt: the reference renderer and both
compiled flavours equal the official template, and the trained spans are the generation spans.
What the built-in does not express (a `</think>` in an answer, arguments as objects, several
system messages) is refused, located."""

from __future__ import annotations

import json

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin

from strategies import agentic_conversations

hf = pytest.importorskip("transformers.utils.chat_template_utils")

SPEC = load_builtin("deepseek-v3.1")
TOKENS = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}


def _stringified(conv):
    """Every call's arguments as a JSON string, as DeepSeek's template needs them."""
    messages, tools = conv
    for m in messages:
        for call in m.get("tool_calls", ()):
            if not isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return messages, tools


conversations_with_string_arguments = agentic_conversations().map(_stringified)


@pytest.fixture(scope="module")
def official(conformance):
    return (conformance / "modern" / "templates" / "deepseek-v3.1.jinja").read_text()


def _hf(template, messages, tools, gen, variables, *, masks=False):
    return hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                    add_generation_prompt=gen, return_assistant_tokens_mask=masks, **variables)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations_with_string_arguments, gen=st.booleans(), thinking=st.sampled_from([None, True, False]))
def test_matches_official_on_calls_with_string_arguments(official, conv, gen, thinking):
    messages, tools = conv
    variables = {} if thinking is None else {"thinking": thinking}
    expected = _hf(official, messages, tools, gen, {**variables, **TOKENS})[0][0]
    ours = render(SPEC, messages, tools=tools, add_generation_prompt=gen, variables=variables)
    assert ours.text == expected
    for training in (False, True):
        assert _hf(compile_template(SPEC, training=training), messages, tools, gen, variables)[0][0] == expected
    (_text,), (indices,) = _hf(compile_template(SPEC, training=True), messages, tools, False, variables, masks=True)
    rendered = render(SPEC, messages, tools=tools, variables=variables)
    assert [(a, b) for a, b in indices if b > a] == rendered.trained_spans()


def test_header_only_after_a_user_turn_and_what_is_trained():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "r"}, {"role": "assistant", "content": "A"}]
    r = render(SPEC, messages)
    assert r.text == ("<｜begin▁of▁sentence｜>S<｜User｜>q<｜Assistant｜></think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f"
                      '<｜tool▁sep｜>{"a": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>'
                      "<｜tool▁output▁begin｜>r<｜tool▁output▁end｜>A<｜end▁of▁sentence｜>")
    calls = ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{"a": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
             "<｜end▁of▁sentence｜>")
    assert [r.text[a:b] for a, b in r.trained_spans()] == [calls, "A<｜end▁of▁sentence｜>"]
    # the generation prompt only after a user turn; `thinking` opens a think block instead of closing it
    assert render(SPEC, messages, add_generation_prompt=True).text == r.text
    ask = [{"role": "user", "content": "q"}]
    assert render(SPEC, ask, add_generation_prompt=True).text.endswith("<｜User｜>q<｜Assistant｜></think>")
    assert render(SPEC, ask, add_generation_prompt=True, variables={"thinking": True}).text.endswith(
        "<｜Assistant｜><think>")


def test_tools_are_accepted_and_not_written():
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}
    ask = [{"role": "user", "content": "q"}]
    assert render(SPEC, ask, tools=[tool]).text == render(SPEC, ask).text == "<｜begin▁of▁sentence｜><｜User｜>q"


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}


@pytest.mark.parametrize("messages,pattern", [
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "think</think>answer"}],
     "message 1: .*'</think>'"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL]}],
     "message 1: tool call 0 .*JSON string"),
    ([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}], "message 1: .*both system"),
])
def test_refuses_what_it_does_not_express(messages, pattern):
    with pytest.raises(RenderError, match=pattern):
        render(SPEC, messages)
    for training in (False, True):
        with pytest.raises(jinja2.TemplateError):
            _hf(compile_template(SPEC, training=training), messages, None, False, {})


# --------------------------------------------------------------------------- deepseek-r1
R1 = load_builtin("deepseek-r1")
thought = st.sampled_from(["", "<think>\nhm\n</think>", "</think>", "x</think>\n\n", "<think>a</think>b</think>"])


@st.composite
def r1_conversations(draw):
    """Plain conversations whose answers hold `</think>` (before, inside, twice) and sometimes
    `reasoning_content` (which the official template ignores)."""
    from strategies import conversations

    messages = draw(conversations(system="anywhere" if draw(st.booleans()) else "maybe"))
    for m in messages:
        if m["role"] == "assistant":
            m["content"] = draw(thought) + m["content"]
            if draw(st.booleans()):
                m["reasoning_content"] = draw(st.sampled_from(["", "r", "\n\nr\n"]))
    return messages


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages=r1_conversations(), gen=st.booleans())
def test_r1_cuts_reasoning_as_the_official_template(conformance, messages, gen):
    official = (conformance / "templates" / "deepseek-r1.jinja").read_text()
    expected = _hf(official, messages, None, gen, TOKENS)[0][0]
    assert render(R1, messages, add_generation_prompt=gen).text == expected
    for training in (False, True):
        assert _hf(compile_template(R1, training=training), messages, None, gen, {})[0][0] == expected
    (_text,), (indices,) = _hf(compile_template(R1, training=True), messages, None, False, {}, masks=True)
    assert [(a, b) for a, b in indices if b > a] == render(R1, messages).trained_spans()


def test_r1_trains_the_answer_after_the_reasoning_only():
    r = render(R1, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nhm\n</think>\n\nA"}])
    assert r.text == "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜>\n\nA<｜end▁of▁sentence｜>"
    assert [r.text[a:b] for a, b in r.trained_spans()] == ["\n\nA<｜end▁of▁sentence｜>"]


def test_r1_refuses_tools():
    with pytest.raises(RenderError, match="message 1: .*tool calls"):
        render(R1, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL]}])


@pytest.mark.parametrize("extra,pattern", [
    ({"refuse_in_assistant": [""]}, r"refuse_in_assistant.*empty string"),
    ({"assistant_prefix_after": {"system": "x"}}, r"assistant_prefix_after"),
    ({"generation_prompt_after": ["ipython"]}, r"generation_prompt_after"),
    ({"tool_calls": {"each": "{arguments}", "arguments": "text"}}, r"tool_calls\.arguments"),
])
def test_new_fields_are_validated_located(extra, pattern):
    from template_forge.errors import SpecError
    from template_forge.format.spec import spec_from_dict

    with pytest.raises(SpecError, match=pattern):
        spec_from_dict({"prompt_format": {"system": "{instruction}", "user": "{instruction}",
                                          "assistant": "{instruction}", **extra}})
