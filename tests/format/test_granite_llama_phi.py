"""Granite 4.0, Llama 3.2 and Phi-4-mini: the edges of their official templates that the generated
conversations of test_agentic_builtins.py reach rarely, and Phi-4-mini's whole proof (its template
is not in the agentic proof: it ignores tool calls, which the built-in refuses)."""

from __future__ import annotations

import datetime as dt
import json
import os

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import conversations, tool_schemas

hf = pytest.importorskip("transformers.utils.chat_template_utils")

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


def _official(conformance, where: str, name: str) -> str:
    return (conformance / where / f"{name}.jinja").read_text()


def _same(official, spec, messages, *, tools=None, gen=False, **extra):
    """The official template, the renderer and both compiled flavours render the same text."""
    expected = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=official,
                                        add_generation_prompt=gen, **extra)[0][0]
    assert render(spec, messages, tools=tools, add_generation_prompt=gen).text == expected
    for training in (False, True):
        compiled = compile_template(spec, training=training)
        assert hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=compiled,
                                        add_generation_prompt=gen)[0][0] == expected
    return expected


# --------------------------------------------------------------------------- granite-4.0
GRANITE_OPENINGS = [[], [{"role": "system", "content": ""}], [{"role": "system", "content": " "}],
                    [{"role": "system", "content": "Be brief."}]]


@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("opening", GRANITE_OPENINGS)
def test_granite_default_stands_in_for_an_empty_opening_block_only(conformance, opening, tools):
    messages = opening + [{"role": "user", "content": "Hi"}, {"role": "system", "content": ""}]
    text = _same(_official(conformance, "modern/templates", "granite-4.0"), load_builtin("granite-4.0"), messages,
                 tools=tools, gen=True)
    assert ("You are a helpful assistant. Please ensure" in text) == (tools is None and not opening[0:1] or
                                                                       tools is None and opening[0]["content"] == "")


@pytest.mark.parametrize("name", ["documents", "available_tools"])
def test_granite_refuses_documents(name):
    with pytest.raises(RenderError, match=f"`{name}` is set, but this format does not render it"):
        render(load_builtin("granite-4.0"), [{"role": "user", "content": "x"}], variables={name: [{"text": "d"}]})


def test_granite_trains_calls_not_results():
    call = {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok", "tool_calls": [call, call]},
                {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"},
                {"role": "assistant", "content": "done"}]
    r = render(load_builtin("granite-4.0"), messages, tools=TOOLS)
    call_text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        f"ok\n{call_text}\n{call_text}<|end_of_text|>", "done<|end_of_text|>"]
    assert ("<|start_of_role|>user<|end_of_role|>\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n"
            "</tool_response><|end_of_text|>\n") in r.text


@pytest.mark.parametrize("empty_system", ["auto", "drop", "render"])
@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("opening", GRANITE_OPENINGS)
def test_default_system_when_empty_compiles_to_what_it_renders(empty_system, tools, opening):
    spec = spec_from_dict({
                           "system": "<s>{instruction}</s>", "user": "<u>{instruction}</u>", "assistant": "{instruction}",
                           "system_placement": "in_place", "empty_system": empty_system, "strip_whitespace": False,
                           "default_system_message": "D", "default_system_when": "empty",
                           "tools": {"system": "<s>{instruction}T{tools}</s>", "system_text": "{instruction}|"}})
    messages = opening + [{"role": "user", "content": "Hi"}, {"role": "system", "content": ""}]
    expected = render(spec, messages, tools=tools).text
    assert expected.count("<s>") == 1 + (empty_system == "render")
    for training in (False, True):
        assert hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=compile_template(
            spec, training=training))[0][0] == expected


def test_default_system_when_empty_needs_in_place_and_a_default():
    with pytest.raises(SpecError, match="default_system_when"):
        spec_from_dict({"system": "{instruction}", "user": "{instruction}", "assistant": "{instruction}",
                        "default_system_when": "empty"})


# --------------------------------------------------------------------------- llama3.2
class _Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None):  # the signature of datetime.now
        return NOW


NOW = dt.datetime(2025, 1, 2, 23, 59)


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_llama32_date_is_today_unless_date_string_is_given(conformance, monkeypatch, tools):
    monkeypatch.setattr(hf, "datetime", _Frozen)  # transformers' strftime_now reads datetime.now()
    official = _official(conformance, "templates", "llama-3.2-instruct")
    spec = load_builtin("llama3.2")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    extra = {"bos_token": "<|begin_of_text|>"}
    today = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=official, **extra)[0][0]
    assert "Today Date: 02 Jan 2025\n" in today
    assert render(spec, messages, tools=tools, now=NOW).text == today
    assert hf.render_jinja_template(conversations=[messages], tools=tools,
                                    chat_template=compile_template(spec))[0][0] == today
    given = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=official,
                                     date_string="26 Jul 2024", **extra)[0][0]
    assert render(spec, messages, tools=tools, variables={"date_string": "26 Jul 2024"}, now=NOW).text == given
    assert given == today.replace("02 Jan 2025", "26 Jul 2024")


@pytest.mark.parametrize("name,variable", [("llama3.2", "custom_tools"), ("llama3.1", "custom_tools"),
                                           ("llama3.1", "builtin_tools")])
def test_llama_refuses_the_tool_switches_it_does_not_render(name, variable):
    spec = load_builtin(name)
    with pytest.raises(RenderError, match=f"`{variable}` is set"):
        render(spec, [{"role": "user", "content": "x"}], variables={variable: ["brave_search"]})
    with pytest.raises(Exception, match=f"`{variable}` is set"):
        hf.render_jinja_template(conversations=[[{"role": "user", "content": "x"}]],
                                 chat_template=compile_template(spec), **{variable: ["brave_search"]})


# --------------------------------------------------------------------------- phi-4-mini
PHI_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}


def _phi_official(conformance, messages, gen):
    try:
        return hf.render_jinja_template(conversations=[messages], chat_template=_official(
            conformance, "modern/templates", "phi-4-mini"), add_generation_prompt=gen, **PHI_TOKENS)[0][0]
    except (jinja2.TemplateError, TypeError):
        return None


def _phi_ours(messages, gen):
    spec = load_builtin("phi-4-mini")
    try:
        text = render(spec, messages, add_generation_prompt=gen).text
    except RenderError:
        text = None
    for training in (False, True):
        try:
            compiled = hf.render_jinja_template(conversations=[messages], chat_template=compile_template(
                spec, training=training), add_generation_prompt=gen)[0][0]
        except jinja2.TemplateError:
            compiled = None
        assert compiled == text
    return text


@st.composite
def _phi_conversations(draw):
    """Plain conversations, system messages anywhere, some carrying a `tools` string (or null),
    and tool results."""
    messages = [dict(m) for m in draw(conversations(system="many"))]
    for m in messages:
        if m["role"] == "system" and draw(st.booleans()):
            schemas = draw(st.lists(tool_schemas(), max_size=2))
            m["tools"] = draw(st.sampled_from([json.dumps(schemas, ensure_ascii=False), "", None]))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(messages)))
        results = [{"role": "tool", "content": c} for c in draw(st.lists(st.text(max_size=8), min_size=1, max_size=2))]
        messages[at:at] = results
    return messages


@settings(max_examples=int(os.environ.get("TFORGE_PHI4_EXAMPLES", "150")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(messages=_phi_conversations(), gen=st.booleans())
def test_phi4_mini_matches_official(conformance, messages, gen):
    expected = _phi_official(conformance, messages, gen)
    assert expected is not None
    assert _phi_ours(messages, gen) == expected


def test_phi4_mini_tools_string_is_prompt_and_answers_are_trained():
    messages = [{"role": "system", "content": "S", "tools": '[{"name": "f"}]'}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}]
    r = render(load_builtin("phi-4-mini"), messages)
    assert r.text == ('<|system|>S<|tool|>[{"name": "f"}]<|/tool|><|end|><|user|>u<|end|><|assistant|>a<|end|>'
                      "<|endoftext|>")
    assert [r.text[a:b] for a, b in r.trained_spans()] == ["a<|end|>"]
    assert [r.text[s.start:s.end] for s in r.segments if s.kind == "tools"] == ['[{"name": "f"}]']


@pytest.mark.parametrize("messages,tools,pattern", [
    ([{"role": "system", "content": "S", "tools": [{"name": "f"}]}], None,
     "message 0: `tools` of this system message must be a string"),
    ([{"role": "user", "content": "x"}], TOOLS, "tool definitions"),  # the official template ignores tools=
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}], None, "message 1: .*tool calls"),
    ([{"role": "ipython", "content": "r"}], None, "message 0"),
])
def test_phi4_mini_refuses_what_it_cannot_render(messages, tools, pattern):
    with pytest.raises(RenderError, match=pattern):
        render(load_builtin("phi-4-mini"), messages, tools=tools)


@pytest.mark.parametrize("fields,pattern", [
    ({"system_key": {"key": "content", "template": "{instruction}{content}"}}, r"system_key\.key"),
    ({"system_key": {"key": "tools", "template": "{instruction}"}}, r"system_key\.template.*\{tools\}"),
    ({"system_key": {"key": "tools", "template": "{instruction}{tools}"}, "system_placement": "separate"},
     "system_key.*in_place"),
])
def test_system_key_is_checked(fields, pattern):
    with pytest.raises(SpecError, match=pattern):
        spec_from_dict({"system": "{instruction}", "user": "{instruction}", "assistant": "{instruction}",
                        "system_placement": "in_place", **fields})


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages=_phi_conversations())
def test_phi4_mini_generation_spans_are_the_trained_spans(messages):
    spec = load_builtin("phi-4-mini")
    rendered = render(spec, messages)
    (text,), (indices,) = hf.render_jinja_template(conversations=[messages], chat_template=compile_template(
        spec, training=True), return_assistant_tokens_mask=True)
    assert text == rendered.text
    assert [(a, b) for a, b in indices if b > a] == rendered.trained_spans()
