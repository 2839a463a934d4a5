"""Granite 4.0, Llama 3.2 and Phi-4-mini: the edges their official templates have that the
generated conversations of test_agentic_builtins.py and test_builtins.py reach rarely."""

from __future__ import annotations

import datetime as dt

import pytest

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict

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


def test_default_system_when_empty_needs_in_place_and_a_default():
    with pytest.raises(SpecError, match="default_system_when"):
        spec_from_dict({"system": "{instruction}", "user": "{instruction}", "assistant": "{instruction}",
                        "default_system_when": "empty"})


# --------------------------------------------------------------------------- llama3.2
class _Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None):  # noqa: ARG003 - the signature of datetime.now
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
