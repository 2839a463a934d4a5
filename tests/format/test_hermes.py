"""Hermes 3 (`hermes-3`, the official `tool_use` named template): the `hermes_signature`
serialiser's Python half and Jinja macro agree with each other and with the official
`json_to_python_type` macro on generated JSON schemas (nested arrays, objects with and without
additionalProperties, union types, missing types and descriptions, return types); plain
conversations with tools match the official template; what the official template cannot
render (no tools, a leading tool result, a type it recurses on) is refused, located."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.serialisers import SERIALISERS
from template_forge.format.spec import load_builtin

from strategies import contents, conversations, tool_names

hf = pytest.importorskip("transformers.utils.chat_template_utils")

TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"}
SPEC = load_builtin("hermes-3")
# Types the official macro writes (a type string other than these makes it recurse forever).
TYPES = ["string", "number", "integer", "boolean", "array", "object"]

type_values = st.one_of(st.sampled_from(TYPES + [""]), st.none(), st.integers(0, 3),
                        st.lists(st.sampled_from(TYPES), max_size=3))
descriptions = st.one_of(contents, st.none(), st.integers(-3, 3), st.booleans())


def _schema(inner):
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("object")}, optional={
            "additionalProperties": st.one_of(inner, st.booleans()), "description": descriptions}),
        st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner, "description": descriptions}),
    )


schemas = st.recursive(st.fixed_dictionaries({}, optional={"type": type_values, "description": descriptions}),
                       _schema, max_leaves=5)


@st.composite
def hermes_tools(draw):
    """1-3 tools with generated parameter schemas, wrapped or bare, some with a return type."""
    out = []
    for name in draw(st.lists(tool_names, min_size=1, max_size=3, unique=True)):
        params = {"type": "object"}
        if draw(st.booleans()):
            params["properties"] = draw(st.dictionaries(st.sampled_from(["city", "q", "n", "opts", "ключ"]), schemas,
                                                        max_size=3))
        fn = {"name": name, "description": draw(contents), "parameters": params}
        if draw(st.integers(0, 3)) == 0:
            fn["return"] = draw(schemas)
            if isinstance(fn["return"].get("description"), (int, type(None))):
                fn["return"]["description"] = "result"  # the official template joins it with +: a string
        out.append({"type": "function", "function": fn} if draw(st.booleans()) else fn)
    return out


@pytest.fixture(scope="module")
def official(conformance):
    return (conformance / "modern" / "templates" / "hermes-3-tool-use.jinja").read_text()


def _hf(template, messages, tools, gen=False, **tokens):
    try:
        return hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                        add_generation_prompt=gen, **tokens)[0][0]
    except (jinja2.TemplateError, TypeError):
        return None


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tools=hermes_tools())
def test_signature_pair_matches_the_official_macro(official, tools):
    messages = [{"role": "user", "content": "Hi"}]
    expected = _hf(official, messages, tools, **TOKENS)
    assert render(SPEC, messages, tools=tools).text == expected
    assert _hf(compile_template(SPEC), messages, tools) == expected
    macro = SERIALISERS["hermes_signature"]
    one = hf._compile_jinja_template(macro.macro + "{{- tf_ser_hermes_signature(tool) -}}")  # transformers' tojson
    for tool in tools:
        assert one.render(tool=tool) == macro.dumps(tool)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(system="many"), tools=hermes_tools(), gen=st.booleans())
def test_plain_chat_with_tools_matches_official(official, messages, tools, gen):
    expected = _hf(official, messages, tools, gen, **TOKENS)
    ours = render(SPEC, messages, tools=tools, add_generation_prompt=gen)
    assert ours.text == expected
    for training in (False, True):
        assert _hf(compile_template(SPEC, training=training), messages, tools, gen) == expected


TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("messages,tools,pattern", [
    ([{"role": "user", "content": "x"}], None, "always writes tool definitions"),
    ([{"role": "user", "content": "x"}], [], "always writes tool definitions"),
    ([{"role": "tool", "content": "r"}, {"role": "user", "content": "x"}], [TOOL], "message 0: .*open a conversation"),
    ([{"role": "user", "content": "x"}], [{"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {"a": {"type": "null"}}}}], "tools: .*'null'.*recurses"),
    ([{"role": "user", "content": "x"}], [{"name": "f", "parameters": {}}], "tools: tool `f` has no `description`"),
    ([{"role": "user", "content": "x"}], [{"name": "f", "description": "d"}], "tools: tool `f` has no `parameters`"),
])
def test_refuses_what_the_official_template_cannot_render(messages, tools, pattern):
    with pytest.raises(RenderError, match=pattern):
        render(SPEC, messages, tools=tools)
    for training in (False, True):
        with pytest.raises(jinja2.TemplateError):
            hf.render_jinja_template(conversations=[messages], tools=tools,
                                     chat_template=compile_template(SPEC, training=training))


def test_tool_results_group_and_what_is_trained():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "dropped", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "r1"}, {"role": "tool", "content": "r2"}]
    r = render(SPEC, messages, tools=[TOOL])
    assert r.text.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
                           "<|im_end|>\n<|im_start|>tool\n<tool_response>\nr1\n</tool_response>\n<tool_response>\n"
                           "r2\n</tool_response><|im_end|>")
    # the newline after the header is the generation prompt's: prompt; results and definitions never trained
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><|im_end|>']
    more = render(SPEC, [*messages, {"role": "assistant", "content": "ok"}], tools=[TOOL])
    assert "r2\n</tool_response>\n<|im_end|><|im_start|>assistant\nok<|im_end|>\n" in more.text


def _spec(**agentic):
    from template_forge.format.spec import spec_from_dict

    return spec_from_dict({"prompt_format": {
        "system": "<s>{instruction}</s>", "user": "<u>{instruction}</u>", "assistant": "<a>{instruction}</a>",
        "trailing_assistant": "<a>", "strip_whitespace": False, **agentic}})


def test_final_group_may_differ_from_group_only_after_its_instruction():
    from template_forge.errors import SpecError

    with pytest.raises(SpecError, match=r"tool_results\.final_group.*only after it"):
        _spec(tool_results={"each": "{instruction}", "group": "<t>{instruction}</t>", "final_group": "{instruction}"})


def test_a_standalone_tools_block_leaves_the_system_message_in_place():
    """`tools.system` without `{instruction}`: its own block; the system message renders as without tools."""
    spec = _spec(tools={"system": "<tools>{tools}</tools>"})
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]
    r = render(spec, messages, tools=[TOOL])
    assert r.text == '<tools>{"type": "function", "function": {"name": "f", "description": "d", "parameters": ' \
                     '{"type": "object"}}}</tools><s>S</s><u>q</u>'
    assert render(spec, messages).text == "<s>S</s><u>q</u>"
    for tools in ([TOOL], None):
        out = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=compile_template(spec))
        assert out[0][0] == render(spec, messages, tools=tools).text


def test_tools_system_is_refused_where_the_system_text_goes_into_a_user_turn():
    from template_forge.errors import SpecError
    from template_forge.format.spec import spec_from_dict

    with pytest.raises(SpecError, match=r"tools\.system.*first_user.*tools\.user"):
        spec_from_dict({"prompt_format": {
            "system": "<s>{instruction}</s>", "user": "<u>{system}{instruction}</u>", "assistant": "{instruction}",
            "system_placement": "first_user", "tools": {"system": "<t>{tools}</t>"}}})
