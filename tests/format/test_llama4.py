"""Llama 4's tools fields: `tools.system_when`, `tools.strip`, `tools.user_turn: opening`
(located SpecErrors; renderer and compiled template refuse and write alike)."""

from __future__ import annotations

import json

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import conversations

hf = pytest.importorskip("transformers.utils.chat_template_utils")

TOOLS = [{"type": "function", "function": {"name": "f", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]
BASE = {"system": "S[{instruction}]", "user": "U[{instruction}]", "assistant": "A[{instruction}]"}


def _compiled(spec, messages, tools):
    return hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=compile_template(spec),
                                    add_generation_prompt=False)[0][0]


def test_system_when_needs_tools_system_and_a_separate_block():
    with pytest.raises(SpecError, match=r"tools\.system_when"):
        spec_from_dict({**BASE, "tools": {"user": "U[{tools}{instruction}]", "system_when": "given"}})
    with pytest.raises(SpecError, match=r"tools\.system_when"):
        spec_from_dict({**BASE, "system_placement": "in_place",
                        "tools": {"system": "T[{instruction}{tools}]", "system_when": "given"}})


def test_strip_needs_tools_user():
    with pytest.raises(SpecError, match=r"tools\.strip"):
        spec_from_dict({**BASE, "tools": {"system": "T[{instruction}{tools}]", "strip": True}})


@pytest.mark.parametrize("messages,expected", [
    ([{"role": "user", "content": " hi "}, {"role": "assistant", "content": " a "}],
     "U[Tools:@hi]A[ a ]"),
    ([{"role": "system", "content": " s "}, {"role": "user", "content": " hi "}, {"role": "user", "content": " b "}],
     "E[s]U[Tools:@hi]U[ b ]"),
])
def test_given_the_tools_block_only_with_a_system_message_and_the_tools_turn_stripped(messages, expected):
    spec = spec_from_dict({**BASE, "strip_whitespace": False, "strip": {"system": True},
                           "tools": {"system": "E[{instruction}]", "system_when": "given",
                                     "user": "U[Tools:{tools}{instruction}]", "strip": True}})
    expected = expected.replace("@", json.dumps(TOOLS[0], ensure_ascii=False))
    assert render(spec, messages, tools=TOOLS).text == expected == _compiled(spec, messages, TOOLS)


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}],
    [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}],
])
def test_opening_refuses_a_conversation_that_does_not_open_with_the_user_turn(messages):
    spec = load_builtin("llama-4")
    with pytest.raises(RenderError, match=r"opens the conversation"):
        render(spec, messages, tools=TOOLS)
    with pytest.raises(jinja2.TemplateError, match=r"opens the conversation"):
        _compiled(spec, messages, TOOLS)
    assert render(spec, messages).text == _compiled(spec, messages, None)  # without tools: no such turn


def test_llama4_refuses_image_parts():
    with pytest.raises(RenderError):
        render(load_builtin("llama-4"), [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}])


# --------------------------------------------------------------------------- what is trained
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": "é"}}}


def test_a_call_turn_is_trained_from_python_start():
    """After the generation prompt (the assistant header) the model writes <|python_start|> to
    make a call: it is trained with the call (train_header_rest), results are not."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok", "tool_calls": [CALL]},
                {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}]
    spec = load_builtin("llama-4")
    r = render(spec, messages)
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        '<|python_start|>ok<|python_end|>{"name": "f", "parameters": {"a": "é"}}<|eot|>', "done<|eot|>"]
    out = hf.render_jinja_template(conversations=[messages], chat_template=compile_template(spec, training=True),
                                   return_assistant_tokens_mask=True)
    assert out[0][0] == r.text
    assert [(a, b) for a, b in out[1][0] if b > a] == r.trained_spans()


def test_null_content_with_calls_renders_empty(conformance):
    """The official template iterates a null content (TypeError); the built-in writes it empty,
    in the renderer and the compiled template alike."""
    official = (conformance / "modern" / "templates" / "llama-4.jinja").read_text()
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [CALL]}]
    with pytest.raises(TypeError):
        hf.render_jinja_template(conversations=[messages], chat_template=official)
    spec = load_builtin("llama-4")
    text = render(spec, messages).text
    assert text.endswith('<|python_start|><|python_end|>{"name": "f", "parameters": {"a": "é"}}<|eot|>')
    assert text == _compiled(spec, messages, None)


# --------------------------------------------------------------------------- llama-4-models
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(messages=conversations(system="maybe"), gen=st.booleans())
def test_llama4_models_equals_the_official_template_where_chatformat_agrees(conformance, messages, gen):
    """Without calls or results, and with the system message (if any) first and trimmed (the
    official template trims it, ChatFormat takes text as given), the two write the same."""
    official = (conformance / "modern" / "templates" / "llama-4.jinja").read_text()
    spec = load_builtin("llama-4-models")
    if messages and messages[0]["role"] == "system":
        messages[0] = {"role": "system", "content": messages[0]["content"].strip()}
    want = hf.render_jinja_template(conversations=[messages], chat_template=official, add_generation_prompt=gen,
                                    bos_token="<|begin_of_text|>")[0][0]
    assert render(spec, messages, add_generation_prompt=gen).text == want
    for training in (False, True):
        assert hf.render_jinja_template(conversations=[messages], chat_template=compile_template(
            spec, training=training), add_generation_prompt=gen)[0][0] == want


def test_llama4_models_takes_system_messages_anywhere_and_no_tool_definitions():
    spec = load_builtin("llama-4-models")
    r = render(spec, [{"role": "user", "content": " u "}, {"role": "system", "content": " s "}])
    assert r.text == ("<|begin_of_text|><|header_start|>user<|header_end|>\n\n u <|eot|>"
                      "<|header_start|>system<|header_end|>\n\n s <|eot|>")
    with pytest.raises(RenderError, match="does not render tool definitions"):
        render(spec, [{"role": "user", "content": "x"}], tools=TOOLS)


def test_tokenize_apart_breaks_around_message_text_and_each_call():
    spec = load_builtin("llama-4-models")
    call = {**CALL, "function": {"name": "f", "arguments": {}}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "tool_calls": [
        call, {**call, "id": "c2"}]}, {"role": "tool", "content": "r"}]
    r = render(spec, messages)
    pieces = [r.text[a:b] for a, b in zip((0,) + r.breaks, r.breaks + (len(r.text),))]
    one = '{"type": "function", "name": "f", "parameters": {}}'
    assert pieces == [
        "<|begin_of_text|><|header_start|>user<|header_end|>\n\n", "hi",
        "<|eot|><|header_start|>assistant<|header_end|>\n\n", "ok", one, one,
        "<|eom|><|header_start|>ipython<|header_end|>\n\n", "r", "<|eom|>"]
    assert [r.text[a:b] for a, b in r.trained_spans()] == ["ok" + one + one + "<|eom|>"]
    assert render(load_builtin("llama-4"), messages).breaks == ()
    assert "tokenize_apart" in compile_template(spec)
    assert _compiled(spec, messages, None) == r.text  # the same text; a whole-text tokenizer may merge across


def test_tokenize_apart_is_a_boolean():
    with pytest.raises(SpecError, match="tokenize_apart"):
        spec_from_dict({**BASE, "tokenize_apart": "yes"})
