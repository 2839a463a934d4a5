"""Named serialisers: a spec names one with ``tools.serialise`` / ``tool_calls.serialise``;
the renderer writes with its Python half and the compiled template with its Jinja macro,
and the two render the same conversation identically. Unknown names and JSON options on a
named serialiser are refused, located. (Each real serialiser's own pair is proved with the
built-in that uses it.)"""

from __future__ import annotations

import pytest

from template_forge.errors import SpecError
from template_forge.format import serialisers
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import spec_from_dict

hf = pytest.importorskip("transformers.utils.chat_template_utils")

#: writes a tool as `name(a, b)` and arguments as `a=1; b=2`, walking the values in Jinja
SIGNATURE = serialisers.Serialiser(
    name="test_signature",
    dumps=lambda tool: f"{tool['function']['name']}({', '.join(tool['function']['parameters']['properties'])})",
    macro=("{%- macro tf_ser_test_signature(tool) -%}{{- tool.function.name ~ '(' -}}"
           "{{- tool.function.parameters.properties | join(', ') -}}{{- ')' -}}{%- endmacro -%}"),
)
PAIRS = serialisers.Serialiser(
    name="test_pairs",
    dumps=lambda args: "; ".join(f"{k}={v}" for k, v in args.items()),
    macro=("{%- macro tf_ser_test_pairs(args) -%}{%- for k, v in args | items -%}"
           "{{- '; ' if not loop.first else '' -}}{{- k ~ '=' ~ v -}}{%- endfor -%}{%- endmacro -%}"),
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(serialisers.SERIALISERS, SIGNATURE.name, SIGNATURE)
    monkeypatch.setitem(serialisers.SERIALISERS, PAIRS.name, PAIRS)


def _spec(**agentic):
    return spec_from_dict({"prompt_format": {
        "system": "<s>{instruction}</s>", "user": "<u>{instruction}</u>", "assistant": "<a>{instruction}</a>",
        "trailing_assistant": "<a>", "strip_whitespace": False, **agentic}})


TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}}]
MESSAGES = [{"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "21"},
            {"role": "assistant", "content": "21 C."}]
AGENTIC = {"tools": {"system": "<s>{instruction}tools: {tools}</s>", "serialise": "test_signature"},
           "tool_calls": {"each": "<call {name}: {arguments}>", "serialise": "test_pairs"},
           "tool_results": {"each": "<r>{instruction}</r>"}}


def test_named_serialisers_render_and_compile_alike(registered):
    spec = _spec(**AGENTIC)
    ours = render(spec, MESSAGES, tools=TOOLS).text
    assert ours == ("<s>tools: weather(city, unit)</s><u>Paris?</u><a><call weather: city=Paris; unit=C></a>"
                    "<r>21</r><a>21 C.</a>")
    for training in (False, True):
        out = hf.render_jinja_template(conversations=[MESSAGES], tools=TOOLS,
                                       chat_template=compile_template(spec, training=training))[0][0]
        assert out == ours


def test_unknown_serialiser_is_refused_with_the_known_ones():
    with pytest.raises(SpecError, match=r"tools\.serialise.*'yaml'.*json"):
        _spec(**{**AGENTIC, "tools": {"system": "{instruction}{tools}", "serialise": "yaml"}})


def test_json_options_on_a_named_serialiser_are_refused(registered):
    with pytest.raises(SpecError, match=r"tool_calls\.json.*writes its own text"):
        _spec(**{**AGENTIC, "tool_calls": {"each": "{arguments}", "serialise": "test_pairs", "json": {"indent": 2}}})


def test_a_macro_must_define_its_own_name():
    with pytest.raises(ValueError, match="tf_ser_x"):
        serialisers.register(serialisers.Serialiser("x", str, "{%- macro other(v) -%}{%- endmacro -%}"))
