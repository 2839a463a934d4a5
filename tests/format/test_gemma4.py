"""Gemma 4 (``gemma-4``): the built-in against the official template on generated tool
schemas richer than the shared ones (nested objects, arrays with items, enums, nullable,
property names that are schema keywords, a missing ``type`` or description, a ``response``),
the Gemma 4 serialisers' Python and Jinja halves on generated values, what is trained, and
the located refusals of what the built-in cannot render. The shared conformance tests
(``test_agentic_builtins.py``) cover the generated agentic and plain conversations."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.serialisers import SERIALISERS
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import agentic_conversations, contents, json_values

hf = pytest.importorskip("transformers.utils.chat_template_utils")

SPEC = load_builtin("gemma-4")
ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
TRICKY_KEYS = ["city", "Q", "n", "type", "description", "ключ", "a b", "items"]


def _official(conformance) -> str:
    return (conformance / "modern" / "templates" / "gemma-4-it.jinja").read_text()


def _macro(name: str, value) -> str:
    ser = SERIALISERS[name]
    return ENV.from_string(ser.macro + "{{- tf_ser_" + name + "(value) -}}").render(value=value)


# ---------------------------------------------------------------- schemas
def _schema(depth: int):
    simple = st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean", "STRING"])},
                                   optional={"description": contents, "enum": st.lists(contents, max_size=2),
                                             "nullable": st.booleans()})
    if depth == 0:
        return simple
    inner = _schema(depth - 1)
    array = st.fixed_dictionaries({"type": st.just("array")}, optional={
        "description": contents, "nullable": st.booleans(),
        "items": st.fixed_dictionaries({}, optional={
            "type": st.one_of(st.sampled_from(["string", "object"]), st.lists(st.sampled_from(["string", "null"]),
                                                                               min_size=1, max_size=2)),
            "properties": st.dictionaries(st.sampled_from(TRICKY_KEYS), inner, max_size=2),
            "required": st.lists(st.sampled_from(TRICKY_KEYS), max_size=2),
            "description": st.one_of(st.none(), contents), "minItems": st.integers(0, 3)})})
    obj = st.fixed_dictionaries({"type": st.just("object")}, optional={
        "description": contents, "properties": st.dictionaries(st.sampled_from(TRICKY_KEYS), inner, max_size=3),
        "required": st.lists(st.sampled_from(TRICKY_KEYS), max_size=2)})
    return st.one_of(simple, array, obj)


@st.composite
def gemma_tools(draw):
    """1-2 function schemas, some without parameters, `type` or description, some with a response."""
    out = []
    for name in draw(st.lists(st.sampled_from(["get_weather", "search", "calc_2"]), min_size=1, max_size=2,
                              unique=True)):
        fn = {"name": name}
        if draw(st.booleans()):
            fn["description"] = draw(contents)
        if draw(st.integers(0, 4)):
            params = {"properties": draw(st.dictionaries(st.sampled_from(TRICKY_KEYS), _schema(2), max_size=3))}
            if draw(st.integers(0, 3)):
                params["type"] = "object"
            if draw(st.booleans()):
                params["required"] = draw(st.lists(st.sampled_from(TRICKY_KEYS), max_size=2))
            fn["parameters"] = params
        if draw(st.integers(0, 3)) == 0:
            fn["response"] = draw(st.fixed_dictionaries({}, optional={
                "description": contents, "type": st.sampled_from(["object", "string"])}))
        out.append({"type": "function", "function": fn})
    return out


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tools=gemma_tools())
def test_declaration_serialiser_halves_agree(tools):
    for tool in tools:
        assert _macro("gemma4_declaration", tool) == SERIALISERS["gemma4_declaration"].dumps(tool)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(args=st.dictionaries(st.sampled_from(TRICKY_KEYS + ["B", "b"]), json_values, max_size=4))
def test_arguments_serialiser_halves_agree(args):
    assert _macro("gemma4_arguments", args) == SERIALISERS["gemma4_arguments"].dumps(args)


def _hf(template, messages, tools, gen, variables):
    try:
        return hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                        add_generation_prompt=gen, **variables)[0][0]
    except jinja2.TemplateError:
        return None


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv=agentic_conversations(), tools=gemma_tools(), gen=st.booleans(), thinking=st.sampled_from([None, True, False]))
def test_rich_declarations_match_the_official_template(conformance, conv, tools, gen, thinking):
    messages, _ = conv
    variables = {} if thinking is None else {"enable_thinking": thinking}
    expected = _hf(_official(conformance), messages, tools, gen, {**variables, "bos_token": "<bos>"})
    assert render(SPEC, messages, tools=tools, add_generation_prompt=gen, variables=variables).text == expected
    for training in (False, True):
        assert _hf(compile_template(SPEC, training=training), messages, tools, gen, variables) == expected


# ---------------------------------------------------------------- what is trained
CALL = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": {"city": "Zürich", "n": [1, None]}}}
AGENTIC = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Weather?"},
           {"role": "assistant", "content": "Checking.", "reasoning_content": "Look it up.", "tool_calls": [CALL]},
           {"role": "tool", "tool_call_id": "c1", "name": "w", "content": "sunny"},
           {"role": "assistant", "content": "Sunny.", "reasoning_content": "dropped"}]


def test_calls_reasoning_and_content_after_results_are_trained_results_are_not():
    r = render(SPEC, AGENTIC, tools=[{"type": "function", "function": {"name": "w"}}],
               variables={"enable_thinking": True})
    assert r.text == (
        "<bos><|turn>system\n<|think|>\nBe brief.<|tool>declaration:w{description:<|\"|><|\"|>}<tool|><turn|>\n"
        "<|turn>user\nWeather?<turn|>\n<|turn>model\n<|channel>thought\nLook it up.\n<channel|>"
        "<|tool_call>call:w{city:<|\"|>Zürich<|\"|>,n:[1,None]}<tool_call|><|tool_response>"
        "response:w{value:<|\"|>sunny<|\"|>}<tool_response|>Checking.<turn|>\nSunny.<turn|>\n")
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        ("<|channel>thought\nLook it up.\n<channel|><|tool_call>call:w{city:<|\"|>Zürich<|\"|>,n:[1,None]}<tool_call|>"
         "<|tool_response>"), "Checking.<turn|>", "Sunny.<turn|>"]


def test_the_empty_thought_channel_of_the_prompt_is_not_trained():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    r = render(SPEC, messages)
    assert r.text == "<bos><|turn>user\nHi<turn|>\n<|turn>model\nHello<turn|>\n"
    assert [r.text[a:b] for a, b in r.trained_spans()] == ["Hello<turn|>"]
    assert render(SPEC, messages[:1], add_generation_prompt=True).text.endswith(
        "<|turn>model\n<|channel>thought\n<channel|>")
    assert render(SPEC, AGENTIC[:4], add_generation_prompt=True).text.endswith("Checking.<turn|>\n")


@pytest.mark.parametrize("after", [[], [{"role": "user", "content": "more"}], [{"role": "assistant", "content": "b"}],
                                   [{"role": "tool", "tool_call_id": "c1", "name": "w", "content": "r"}]])
@pytest.mark.parametrize("content", ["", " Let me check. ", "\n"])
def test_content_beside_calls_goes_where_the_official_template_puts_it(conformance, after, content):
    """Before `<|tool_response>` when no result answers the calls, else after the results."""
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": content, "reasoning_content": "r", "tool_calls": [CALL]}, *after]
    for gen in (False, True):
        for variables in ({}, {"enable_thinking": True}):
            expected = _hf(_official(conformance), messages, None, gen, {**variables, "bos_token": "<bos>"})
            assert render(SPEC, messages, add_generation_prompt=gen, variables=variables).text == expected
            for training in (False, True):
                assert _hf(compile_template(SPEC, training=training), messages, None, gen, variables) == expected
    r = render(SPEC, messages[:2])
    assert [r.text[a:b] for a, b in r.trained_spans()][-1].endswith(f"<tool_call|>{content.strip()}<|tool_response>")


# ---------------------------------------------------------------- refusals, located
def _with(*extra):
    return [{"role": "user", "content": "q"}, *extra]


@pytest.mark.parametrize("messages,index,pattern", [
    (_with({"role": "assistant", "content": "a <|channel>b"}), 1, r"holds '<\|channel>'"),
    (_with({"role": "tool", "content": "r"}), 1, "follows no assistant message with tool calls"),
    (_with({"role": "assistant", "content": "", "tool_calls": [{**CALL, "id": None}]},
           {"role": "tool", "content": "r", "tool_call_id": None}), None, None),
    (_with({"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}), 2,
     "no `name`"),
])
def test_refusals_name_the_message(conformance, messages, index, pattern):
    if pattern is None:  # an id-less call answered by an id-less result: named by the call, as officially
        assert "response:w{" in render(SPEC, messages).text
        return
    with pytest.raises(RenderError, match=pattern) as exc:
        render(SPEC, messages)
    assert exc.value.message_index == index
    assert _hf(compile_template(SPEC), messages, None, False, {}) is None


def test_no_user_message_with_call_reasoning_is_refused():
    messages = [{"role": "assistant", "content": "", "reasoning_content": "r", "tool_calls": [CALL]}]
    with pytest.raises(RenderError, match="no user message|has none"):
        render(SPEC, messages)


def test_a_derived_variable_is_not_set_by_callers():
    with pytest.raises(RenderError, match="`think` is derived from enable_thinking"):
        render(SPEC, [{"role": "user", "content": "x"}], variables={"think": "x"})
    with pytest.raises(jinja2.TemplateError, match="`think` is derived from enable_thinking"):
        hf.render_jinja_template(conversations=[[{"role": "user", "content": "x"}]], think="x",
                                 chat_template=compile_template(SPEC))


# ---------------------------------------------------------------- the new spec fields, checked
BASE = {"system": "<s>{instruction}</s>", "user": "<u>{instruction}</u>", "assistant": "<a>{instruction}</a>",
        "variables": {"on": False, "mark": {"when": {"on": True}, "text": "!"}}}


@pytest.mark.parametrize("extra,pattern", [
    ({"opening_system": {"template": "<s>{instruction}</s>"}}, r"opening_system.*in_place"),
    ({"system_placement": "in_place", "opening_system": {"template": "<s></s>"}}, r"opening_system\.template"),
    ({"system_placement": "in_place", "opening_system": {"template": "{instruction}", "present_when": {"x": True}}},
     r"opening_system\.present_when\.x.*no boolean"),
    ({"variables": {"mark": {"when": {"nope": True}, "text": "!"}}}, r"variables\.mark\.when\.nope"),
    ({"refuse_in_assistant": [""]}, r"refuse_in_assistant.*empty"),
    ({"tool_calls": {"each": "{name}", "assistant": "{calls}", "after_results": "x"}},
     r"tool_calls\.after_results.*instruction"),
    ({"reasoning": {"block": "{instruction}", "keys": []}}, r"reasoning\.keys.*empty"),
    ({"tool_calls": {"each": "{name}", "after_results": "{instruction}"}}, r"tool_calls\.after_results.*assistant"),
    ({"tool_results": {"each": "{instruction}", "name": "id"}}, r"tool_results\.name"),
])
def test_new_fields_are_checked_and_located(extra, pattern):
    with pytest.raises(SpecError, match=pattern):
        spec_from_dict({"prompt_format": {**BASE, **extra}})


def test_derived_variable_and_opening_system_render_and_compile_alike():
    spec = spec_from_dict({"prompt_format": {**BASE, "system_placement": "in_place", "empty_system": "render",
                                             "opening_system": {"template": "<S>{mark}{instruction}</S>",
                                                                "present_when": {"on": True}},
                                             "continue_assistant_turns": True}})
    for messages in ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                      {"role": "assistant", "content": "b"}],
                     [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                      {"role": "system", "content": "t"}]):
        for on in (True, False):
            ours = render(spec, messages, variables={"on": on}).text
            for training in (False, True):
                assert _hf(compile_template(spec, training=training), messages, None, False, {"on": on}) == ours
    assert render(spec, messages, variables={"on": True}).text == "<S>!s</S><u>q</u><s>t</s>"
    assert render(spec, [{"role": "user", "content": "q"}], variables={"on": True}).text == "<S>!</S><u>q</u>"


@pytest.mark.parametrize("keys", [{"reasoning": "R"}, {"reasoning_content": "C"}, {"thinking": "T"},
                                  {"reasoning": "", "reasoning_content": "C"}, {"reasoning": "R", "thinking": "T"},
                                  {"reasoning": "R", "reasoning_content": "C"}])
def test_reasoning_is_read_as_the_official_template_reads_it(conformance, keys):
    """``reasoning or reasoning_content``, where transformers fills ``reasoning_content`` from
    ``thinking`` and ``reasoning`` (``reasoning.keys``)."""
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL], **keys},
                {"role": "tool", "tool_call_id": "c1", "content": "r"}]
    expected = _hf(_official(conformance), messages, None, False, {"bos_token": "<bos>"})
    assert render(SPEC, messages).text == expected
    for training in (False, True):
        assert _hf(compile_template(SPEC, training=training), messages, None, False, {}) == expected
