"""The Mistral built-ins with tools (mistral-v3, mistral-nemo, mistral-small-3.2 and the
encoder-following -common formats): the spec fields they brought (``tools.user_turn:
like_last``, ``tool_calls.names``, ``id_length``, ``system_in_alternation``,
``default_system_variables``) and the ``mistral_tool`` serialiser, each against the
official template where there is one, and the compiled template against the renderer.
(The generated comparisons with the official templates are in test_agentic_builtins.py;
token ids against mistral-common in tests/tokens/test_vendor_mistral.py.)"""

from __future__ import annotations

import os
from datetime import datetime

import jinja2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.serialisers import SERIALISERS
from template_forge.format.spec import load_builtin, spec_from_dict

from strategies import agentic_conversations, json_values, tool_schemas

hf = pytest.importorskip("transformers.utils.chat_template_utils")
EXAMPLES = int(os.environ.get("TFORGE_EXAMPLES", "40"))
OFFICIAL = {"mistral-v3": "templates/mistral-7b-instruct-v0.3", "mistral-nemo": "templates/mistral-nemo-instruct-2407",
            "mistral-small-3.2": "modern/templates/mistral-small-3.2"}
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
CALL = {"id": "abc123XYZ", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": 'Say "hi"\n',
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def official(conformance, name: str) -> str:
    return (conformance / f"{OFFICIAL[name]}.jinja").read_text()


def hf_render(template, messages, tools=None, gen=False, **kw):
    try:
        return hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                        add_generation_prompt=gen, **kw)[0][0]
    except jinja2.TemplateError:
        return None


def ours(name, messages, tools=None, gen=False, now=None):
    try:
        return render(load_builtin(name), messages, tools=tools, add_generation_prompt=gen, now=now).text
    except RenderError:
        return None


@pytest.fixture
def frozen_clock(monkeypatch):
    """``frozen_clock(when)``: transformers' ``strftime_now`` reads ``when`` (it calls
    ``datetime.now()`` of its module at render time)."""
    def freeze(when: datetime):
        class Frozen(datetime):
            @classmethod
            def now(cls, tz=None):
                return when

        monkeypatch.setattr(hf, "datetime", Frozen)

    return freeze


# ---------------------------------------------------------------- the clock in the default system text
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)), gen=st.booleans())
def test_mistral_small_default_system_names_the_frozen_date(conformance, frozen_clock, when, gen):
    frozen_clock(when)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    expected = hf_render(official(conformance, "mistral-small-3.2"), messages, gen=gen, **TOKENS)
    assert f"The current date is {when:%Y-%m-%d}." in expected
    assert ours("mistral-small-3.2", messages, gen=gen, now=when) == expected
    for training in (False, True):
        assert hf_render(compile_template(load_builtin("mistral-small-3.2"), training=training), messages, gen=gen) \
            == expected


def test_mistral_small_own_system_message_replaces_the_default(conformance, frozen_clock):
    frozen_clock(datetime(2030, 5, 4))
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}, {"role": "system", "content": "S"},
                {"role": "user", "content": "Again"}]
    text = ours("mistral-small-3.2", messages, now=datetime(2030, 5, 4))
    assert text == "<s>[SYSTEM_PROMPT][/SYSTEM_PROMPT][INST]Hi[/INST][SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]Again[/INST]"
    assert hf_render(official(conformance, "mistral-small-3.2"), messages, **TOKENS) == text


@pytest.mark.parametrize("roles,accepted", [
    (["user", "system", "user"], True),  # a later system message takes the assistant's turn
    (["user", "assistant", "system", "user"], False),
    (["user", "system", "assistant"], False),
    (["system", "user", "assistant"], True),  # the opening one stands outside the alternation
])
def test_mistral_small_system_messages_take_a_turn(conformance, roles, accepted):
    messages = [{"role": r, "content": r[0]} for r in roles]
    got = ours("mistral-small-3.2", messages)
    assert (got is not None) == accepted
    assert hf_render(official(conformance, "mistral-small-3.2"), messages, **TOKENS) == got
    assert hf_render(compile_template(load_builtin("mistral-small-3.2")), messages) == got


# ---------------------------------------------------------------- call ids, definitions, names
@pytest.mark.parametrize("name", sorted(OFFICIAL))
@pytest.mark.parametrize("call_id,result_id", [("abc", "abc"), (None, None), ("abc123XYZ", None),
                                                ("abc123XYZ0", "abc123XYZ0")])
def test_call_ids_of_another_length_are_refused_like_the_official_template(conformance, name, call_id, result_id):
    call = {k: v for k, v in {**CALL, "id": call_id}.items() if v is not None}
    result = {k: v for k, v in {"role": "tool", "tool_call_id": result_id, "content": "sunny"}.items() if v is not None}
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]}, result]
    with pytest.raises(RenderError, match=r"message [12]: .*exactly 9 characters"):
        render(load_builtin(name), messages, tools=TOOLS)
    assert hf_render(official(conformance, name), messages, TOOLS, **TOKENS) is None
    assert hf_render(compile_template(load_builtin(name)), messages, TOOLS) is None


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_definitions_go_before_every_user_turn_equal_to_the_last(conformance, name):
    messages = [{"role": "user", "content": "Same"}, {"role": "assistant", "content": "A"},
                {"role": "user", "content": "Other"}, {"role": "assistant", "content": "B"},
                {"role": "user", "content": "Same"}]
    text = ours(name, messages, TOOLS)
    assert text.count("[AVAILABLE_TOOLS]") == 2
    assert hf_render(official(conformance, name), messages, TOOLS, **TOKENS) == text
    assert hf_render(compile_template(load_builtin(name)), messages, TOOLS) == text


def test_mistral_v3_writes_tools_key_by_key_and_names_as_json():
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "ignored", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "abc123XYZ", "content": "sunny"}, {"role": "assistant", "content": " Sunny. "}]
    r = render(load_builtin("mistral-v3"), messages, tools=TOOLS)
    assert r.text == (
        '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Say "hi"\n", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}][/AVAILABLE_TOOLS]'
        '[INST] Weather?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Zürich"}, '
        '"id": "abc123XYZ"}]</s>[TOOL_RESULTS] {"content": sunny, "call_id": "abc123XYZ"}[/TOOL_RESULTS] Sunny.</s>')
    # the calls and the answer are trained; the definitions and the result are not
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Zürich"}, "id": "abc123XYZ"}]</s>', "Sunny.</s>"]


# ---------------------------------------------------------------- the mistral_tool serialiser
@st.composite
def odd_tools(draw):
    """Tool schemas with extra keys of any JSON value, a `return` key, quotes in strings."""
    tool = draw(tool_schemas())[0]
    fn = dict(tool["function"])
    for key in draw(st.lists(st.sampled_from(["return", "strict", "x\"y", "n"]), max_size=3, unique=True)):
        fn[key] = draw(json_values)
    return {**tool, "function": fn}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(tool=odd_tools())
def test_mistral_tool_serialiser_pair_agrees(tool):
    ser = SERIALISERS["mistral_tool"]
    template = ser.macro + "{{- tf_ser_mistral_tool(tools[0]) -}}"
    got = hf_render(template, [{"role": "user", "content": "x"}], [tool])
    assert got == ser.dumps(tool)
    without_return = {k: v for k, v in tool["function"].items() if k != "return"}
    assert ser.dumps({**tool, "function": without_return}) == got  # `return` is left out


# ---------------------------------------------------------------- the -common formats compile to their renderer
@pytest.mark.parametrize("name", ["mistral-v3-common", "mistral-nemo-common", "mistral-small-3.2-common"])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(conv=agentic_conversations(reasoning=False), gen=st.booleans())
def test_common_formats_compile_to_their_renderer(name, conv, gen):
    messages, tools = conv
    spec = load_builtin(name)
    expected = ours(name, messages, tools, gen)
    for training in (False, True):
        assert hf_render(compile_template(spec, training=training), messages, tools, gen) == expected
    assume(expected is not None and not gen)
    out = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=compile_template(spec, training=True),
                                   return_assistant_tokens_mask=True)
    rendered = render(spec, messages, tools=tools)
    assert [(a, b) for a, b in out[1][0] if b > a] == rendered.trained_spans()


# ---------------------------------------------------------------- the new spec fields, checked
def _spec(**fields):
    return spec_from_dict({"system": "{instruction}", "user": "[INST]{instruction}[/INST]",
                           "assistant": "{instruction}</s>", **fields})


@pytest.mark.parametrize("fields,pattern", [
    ({"tool_calls": {"each": "{name}", "id_length": 0}}, r"tool_calls\.id_length.*is 0"),
    ({"tool_results": {"each": "{instruction}", "id_length": -1}}, r"tool_results\.id_length.*is -1"),
    ({"tool_calls": {"each": "{name}", "names": "yaml"}}, r"tool_calls\.names"),
    ({"tools": {"user": "{tools}{instruction}", "user_turn": "middle"}}, r"tools\.user_turn"),
    ({"system_in_alternation": True}, r"system_in_alternation.*require_alternation"),
    ({"default_system_variables": True, "default_system_message": "{today}", "variables": {"today": {"strftime": "%d"}}},
     r"default_system_message.*no literal text"),
    ({"default_system_variables": True, "default_system_message": "Date {nope}."}, r"default_system_message.*nope"),
])
def test_new_fields_are_checked_with_a_location(fields, pattern):
    with pytest.raises(SpecError, match=pattern):
        _spec(**fields)


def test_default_system_variables_fills_the_default_in_every_placement():
    for placement in ("separate", "in_place", "first_user"):
        user = "[INST]{system}{instruction}[/INST]" if placement == "first_user" else "[INST]{instruction}[/INST]"
        spec = _spec(system="<<{instruction}>>", user=user, system_placement=placement, default_system_variables=True,
                     default_system_message="Today is {today}.", variables={"today": {"strftime": "%Y-%m-%d"}})
        messages = [{"role": "user", "content": "Hi"}]
        text = render(spec, messages, now=datetime(2031, 2, 3)).text
        assert "<<Today is 2031-02-03.>>" in text
        assert hf_render(compile_template(spec), messages, today="2031-02-03") == text
