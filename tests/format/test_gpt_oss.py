"""gpt-oss (harmony): the built-in reproduces the official template on generated agentic and
plain conversations (tools as a TypeScript namespace, one call per turn, results named
after the call, analysis kept only where the template keeps it, ``<|return|>`` on the
answer being trained, ``reasoning_effort``, the date frozen), in the renderer and in both
compiled flavours; the ``harmony_typescript`` serialiser's two halves agree with the
official macros on generated schemas; what the model writes after ``<|start|>assistant``
is trained, tool results and definitions never.
"""

from __future__ import annotations

import datetime as dt
import os

import jinja2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format import serialisers
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin

from strategies import TRICKY, agentic_conversations, harmony_conversations, plain_with_reasoning

hf = pytest.importorskip("transformers.utils.chat_template_utils")

NOW = dt.datetime(2026, 3, 9, 12, 0)
EXAMPLES = int(os.environ.get("TFORGE_GPT_OSS_EXAMPLES", "60"))
SETTINGS = {"deadline": None, "derandomize": True,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}


class _Frozen(dt.datetime):
    """transformers' ``strftime_now`` reads ``datetime.now()``: frozen at NOW."""

    @classmethod
    def now(cls, tz=None):
        return NOW


class _Text(str):
    def __repr__(self):  # hypothesis prints the arguments of a failing example: not the whole template
        return "<gpt-oss.jinja>"


@pytest.fixture
def official(conformance, monkeypatch):
    monkeypatch.setattr(hf, "datetime", _Frozen)
    return _Text((conformance / "modern" / "templates" / "gpt-oss.jinja").read_text())


def _hf(template, messages, tools, gen, variables, *, masks=False):
    try:
        out = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                       add_generation_prompt=gen, return_assistant_tokens_mask=masks, **variables)
    except jinja2.TemplateError:
        return None
    return out if masks else out[0][0]


def _ours(spec, messages, tools, gen, variables):
    try:
        return render(spec, messages, tools=tools, add_generation_prompt=gen, variables=variables, now=NOW)
    except RenderError:
        return None


efforts = st.sampled_from([{}, {"reasoning_effort": "low"}, {"reasoning_effort": "medium"},
                           {"reasoning_effort": "high"}])


def _same(official, spec, messages, tools, gen, variables):
    expected = _hf(official, messages, tools, gen, variables)
    ours = _ours(spec, messages, tools, gen, variables)
    assert (ours.text if ours else None) == expected
    for training in (False, True):
        assert _hf(compile_template(spec, training=training), messages, tools, gen, variables) == expected
    return expected


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv=agentic_conversations(max_calls=1), gen=st.booleans(), variables=efforts)
def test_agentic_conversations_match_the_official_template(official, conv, gen, variables):
    messages, tools = conv
    _same(official, load_builtin("gpt-oss"), messages, tools, gen, variables)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv=harmony_conversations(), gen=st.booleans(), variables=efforts)
def test_harmony_conversations_match_the_official_template(official, conv, gen, variables):
    messages, tools = conv
    _same(official, load_builtin("gpt-oss"), messages, tools, gen, variables)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(messages=plain_with_reasoning(), gen=st.booleans(), variables=efforts,
       identity=st.sampled_from([None, "You are a terse bot.", ""]))
def test_plain_chat_matches_the_official_template(official, messages, gen, variables, identity):
    if identity is not None:
        variables = {**variables, "model_identity": identity}
    _same(official, load_builtin("gpt-oss"), messages, None, gen, variables)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv=harmony_conversations())
def test_generation_spans_are_the_trained_spans(conv):
    """What the model writes after `<|start|>assistant` is trained: the analysis message, the
    channel header, the answer or the call, and its `<|end|>`/`<|return|>`/`<|call|>`; the
    system and developer blocks, tool definitions, user turns and tool results never."""
    messages, tools = conv
    spec = load_builtin("gpt-oss")
    rendered = _ours(spec, messages, tools, False, {})
    assume(rendered is not None)
    out = _hf(compile_template(spec, training=True), messages, tools, False, {"current_date": "2026-03-09"},
              masks=True)
    (text,), (indices,) = out
    assert text == rendered.text
    got = [(a, b) for a, b in indices if b > a]
    assert got == rendered.trained_spans()
    for seg in rendered.segments:
        if seg.kind in ("tool", "tools", "assistant_end", "system", "user"):
            assert not any(a < seg.end and seg.start < b for a, b in got), seg
    for a, b in got:
        assert not rendered.text[a:b].startswith("<|start|>assistant"), rendered.text[a:b]


def test_the_trained_text_is_what_the_model_writes():
    spec = load_builtin("gpt-oss")
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Zürich"}}}
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "thinking": "Look it up.", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "assistant", "content": "Sunny.", "thinking": "Done."}]
    r = render(spec, messages, now=NOW)
    # the analysis before the call is dropped: a later final answer follows it
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        ' to=functions.weather<|channel|>commentary json<|message|>{"city": "Zürich"}<|call|>',
        "<|channel|>analysis<|message|>Done.<|end|><|start|>assistant<|channel|>final<|message|>Sunny.<|return|>"]
    assert "<|start|>functions.weather to=assistant<|channel|>commentary<|message|>\"sunny\"<|end|>" in r.text
    assert "Current date: 2026-03-09\n" in r.text
    # with the generation prompt after it, the answer is history: <|end|>, no analysis
    prompted = render(spec, messages, add_generation_prompt=True, now=NOW).text
    assert prompted.endswith("<|start|>assistant<|channel|>final<|message|>Sunny.<|end|><|start|>assistant")
    assert "Done." not in prompted


@pytest.mark.parametrize("messages,pattern", [
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "s"}], "message 1: .*first message"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"c{k}", "type": "function", "function": {"name": "f", "arguments": {}}} for k in range(2)]}],
     "message 1: .*at most 1"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "c", "thinking": "t", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}], "message 1: .*both content and"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}], "message 1: .*follows no assistant"),
    ([{"role": "developer", "content": "x"}], "message 0: .*role"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "<|channel|>final<|message|>hi"}],
     "message 1: .*content holds '<\\|channel"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "a", "thinking": "<|channel|>analysis<|message|>"}],
     "message 1: .*reasoning holds"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]},
      {"role": "ipython", "tool_call_id": "c", "content": "r"}], "message 2: .*role `ipython`"),
])
def test_what_the_built_in_refuses(official, messages, pattern):
    spec = load_builtin("gpt-oss")
    with pytest.raises(RenderError, match=pattern):
        render(spec, messages, now=NOW)
    for training in (False, True):  # the compiled template refuses it too
        assert _hf(compile_template(spec, training=training), messages, None, False, {}) is None


def test_builtin_tools_are_refused_when_given():
    spec, messages = load_builtin("gpt-oss"), [{"role": "user", "content": "x"}]
    with pytest.raises(RenderError, match="`builtin_tools` is set"):
        render(spec, messages, variables={"builtin_tools": ["python"]})
    assert render(spec, messages, variables={"builtin_tools": []}, now=NOW).text.startswith("<|start|>system")
    for training in (False, True):
        assert _hf(compile_template(spec, training=training), messages, None, False, {"builtin_tools": ["browser"]}) \
            is None


def test_reasoning_effort_is_a_choice():
    with pytest.raises(RenderError, match="reasoning_effort` is 'max'"):
        render(load_builtin("gpt-oss"), [{"role": "user", "content": "x"}], variables={"reasoning_effort": "max"})


# ---------------------------------------------------------------- the harmony_typescript serialiser
leaf_types = st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null"])
descriptions = st.one_of(st.none(), st.sampled_from(["", "a city", "line\nbreak", "ключ {x}"]))


def _schema(draw, depth: int) -> dict:
    kind = draw(st.sampled_from(["leaf", "array", "object", "union", "oneOf", "enum"] if depth else ["leaf", "enum"]))
    if kind == "leaf":
        out = {"type": draw(leaf_types)}
    elif kind == "enum":
        out = {"type": "string", "enum": draw(st.lists(st.sampled_from(["c", "f", "k m"]), max_size=3))}
    elif kind == "union":
        out = {"type": draw(st.lists(leaf_types, min_size=1, max_size=3))}
    elif kind == "array":
        out = {"type": "array"}
        if draw(st.booleans()):
            out["items"] = _schema(draw, depth - 1)
    elif kind == "object":
        names = draw(st.lists(st.sampled_from(["x", "y", "z_1"]), unique=True, max_size=3))
        out = {"type": "object", "properties": {n: _schema(draw, depth - 1) for n in names}}
        if draw(st.booleans()):
            out["required"] = names[:1]
    else:
        out = {"oneOf": [_schema(draw, depth - 1) for _ in range(draw(st.integers(1, 3)))]}
    if draw(st.booleans()):
        out["nullable"] = draw(st.booleans())
    desc = draw(descriptions)
    if desc is not None:
        out["description"] = desc
    if draw(st.integers(0, 3)) == 0:
        out["default"] = draw(st.sampled_from(TRICKY[:8])) if "enum" in out or "oneOf" in out else \
            draw(st.sampled_from([1, "c", None, [1, "é"], {"k": True}]))
    return out


@st.composite
def function_tools(draw):
    out = []
    for name in draw(st.lists(st.sampled_from(["get_weather", "search", "f2"]), min_size=1, max_size=2, unique=True)):
        params = {n: _schema(draw, 2) for n in draw(st.lists(st.sampled_from(["city", "q", "opts"]), unique=True,
                                                             max_size=3))}
        function = {"name": name, "description": draw(st.sampled_from(["", "Find it.", "two\nlines"]))}
        if draw(st.integers(0, 4)):
            function["parameters"] = {"type": "object", "properties": params,
                                      "required": draw(st.sampled_from([[], sorted(params)[:1], sorted(params)]))}
        out.append({"type": "function", "function": function})
    return out


@settings(max_examples=EXAMPLES * 2, **SETTINGS)
@given(tools=function_tools())
def test_harmony_typescript_matches_the_official_macros(official, tools):
    """Both halves of the serialiser write what the official `render_tool_namespace` writes."""
    _same(official, load_builtin("gpt-oss"), [{"role": "user", "content": "Hi"}], tools, True, {})


def test_harmony_typescript_halves_agree_on_tools():
    ser = serialisers.SERIALISERS["harmony_typescript"]
    tool = {"type": "function", "function": {"name": "f", "description": "D", "parameters": {
        "type": "object", "properties": {"a": {"type": "object", "properties": {"x": {"type": "string"}}},
                                         "u": {"type": "string", "enum": ["c", "f"], "default": "c"}},
        "required": ["a"]}}}
    expected = ('// D\ntype f = (_: {\na: {\nx?: \n                string},\nu?: "c" | "f", // default: c,\n'
                '}) => any;\n\n')
    assert ser.dumps(tool) == expected
    env = jinja2.Environment()
    env.filters["tojson"] = lambda v: __import__("json").dumps(v, ensure_ascii=False)
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(jinja2.TemplateError(m))
    assert env.from_string(ser.macro + "{{- tf_ser_harmony_typescript(tool) -}}").render(tool=tool) == expected


def test_harmony_typescript_refuses_what_the_template_cannot_write():
    with pytest.raises(RenderError, match="harmony_typescript: a tool's description must be text"):
        render(load_builtin("gpt-oss"), [{"role": "user", "content": "x"}],
               tools=[{"type": "function", "function": {"name": "f"}}])


# ---------------------------------------------------------------- the new fields, on a toy format
TOY = {"prompt_format": {
    "system": "<S>{instruction}</S>", "system_text": "[{instruction}]", "system_position": "first",
    "empty_system": "drop", "user": "<U>{instruction}</U>", "assistant": "<A>:{instruction}</A>",
    "final_assistant": "<A>:{instruction}</F>", "final_when": "no_generation_prompt", "trailing_assistant": "<A>",
    "train_header_rest": True, "stop": ["</A>", "</F>", "</C>"], "strip_whitespace": False,
    "reasoning": {"block": "<R>{instruction}</R>", "before_turn": True, "keep": "unanswered", "empty": "given"},
    "tools": {"system": "<S>{instruction}{tools}</S>", "system_text": "[{instruction}]"},
    "tool_calls": {"assistant": "<A> call {calls}</C>", "each": "{name}({arguments})", "separator": ";",
                   "content_as": "reasoning"},
    "tool_results": {"each": "<T {name}>{instruction}</T>", "name": "call"},
}}


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(conv=agentic_conversations(), gen=st.booleans())
def test_new_fields_render_and_compile_alike(conv, gen):
    """system_text, system_position, final_when, train_header_rest, reasoning.before_turn,
    keep: unanswered, empty: given, tool_calls.content_as and tool_results.name: the renderer
    and both compiled flavours agree, and the generation spans are the trained spans."""
    from template_forge.format.spec import spec_from_dict

    messages, tools = conv
    spec = spec_from_dict(TOY)
    ours = _ours(spec, messages, tools, gen, {})
    for training in (False, True):
        assert _hf(compile_template(spec, training=training), messages, tools, gen, {}) == (ours.text if ours else None)
    if ours is not None and not gen:
        _, (indices,) = _hf(compile_template(spec, training=True), messages, tools, False, {}, masks=True)
        assert [(a, b) for a, b in indices if b > a] == ours.trained_spans()


def test_new_fields_on_one_conversation():
    from template_forge.format.spec import spec_from_dict

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
                {"role": "assistant", "content": "think first", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "name": "ignored", "content": "r"},
                {"role": "assistant", "content": "a", "reasoning_content": ""}]
    r = render(spec_from_dict(TOY), messages)
    assert r.text == '<S>[sys]</S><U>q</U><A> call f({"a": 1})</C><T f>r</T><R></R><A>:a</F>'
    assert [r.text[a:b] for a, b in r.trained_spans()] == [' call f({"a": 1})</C>', "<R></R><A>:a</F>"]
    assert render(spec_from_dict(TOY), messages[1:2]).text == "<S></S><U>q</U>"


@pytest.mark.parametrize("change,pattern", [
    ({"system_placement": "first_user", "user": "<U>{system}{instruction}</U>"}, r"prompt_format\.system_text.*separate"),
    ({"reasoning": None}, r"prompt_format\.tool_calls\.content_as.*no `reasoning`"),
    ({"final_when": "sometimes"}, r"prompt_format\.final_when"),
    ({"tool_results": {"each": "{instruction}", "name": "tool"}}, r"prompt_format\.tool_results\.name"),
    ({"system_text": None, "system_placement": "in_place"}, r"prompt_format\.system_position.*in_place"),
    ({"refuse_in_assistant": [""]}, r"prompt_format\.refuse_in_assistant.*empty"),
    ({"unsupported_variables": ["a-b"]}, r"prompt_format\.unsupported_variables.*'a-b'"),
    ({"tool_results": {"each": "{instruction}", "roles": []}}, r"prompt_format\.tool_results\.roles.*empty"),
])
def test_new_fields_are_checked(change, pattern):
    from template_forge.errors import SpecError
    from template_forge.format.spec import spec_from_dict

    fmt = {k: v for k, v in {**TOY["prompt_format"], **change}.items() if v is not None}
    with pytest.raises(SpecError, match=pattern):
        spec_from_dict({"prompt_format": fmt})
