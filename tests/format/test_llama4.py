"""Llama 4's tools fields: `tools.system_when`, `tools.strip`, `tools.user_turn: opening`
(located SpecErrors; renderer and compiled template refuse and write alike)."""

from __future__ import annotations

import json

import jinja2
import pytest

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin, spec_from_dict

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
