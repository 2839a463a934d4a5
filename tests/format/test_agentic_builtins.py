"""Agentic built-ins reproduce their vendors' official templates on generated conversations
with tool definitions, parallel tool calls (nested, unicode, quoted arguments, as objects
and as JSON strings), tool results, reasoning present and absent, and the thinking switch
on and off, with and without the generation prompt; rendered by transformers with
``tools=`` and the switches as ``apply_chat_template`` passes them. The reference renderer
and both compiled flavours are compared, and the training flavour's ``{% generation %}``
spans are the renderer's trained spans.
"""

from __future__ import annotations

import datetime as dt
import json

import jinja2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError
from template_forge.format.compiler import compile_template
from template_forge.format.render import render
from template_forge.format.spec import load_builtin

from conftest import frozen_clock
from strategies import agentic_conversations, conversations

hf = pytest.importorskip("transformers.utils.chat_template_utils")

#: built-in → (corpus folder, official template, the switches it takes)
AGENTIC = {
    "qwen2.5": ("templates", "qwen2.5-instruct", {}),
    "qwen3": ("modern/templates", "qwen3", {"enable_thinking": [True, False]}),
    "llama3.1": ("templates", "llama-3.1-instruct", {}),
    "llama3.3": ("templates", "llama-3.3-instruct", {}),
    "gemma-4": ("modern/templates", "gemma-4-it", {"enable_thinking": [True, False]}),
    "hermes-3": ("modern/templates", "hermes-3-tool-use", {}),
    "deepseek-v3.1": ("modern/templates", "deepseek-v3.1", {"thinking": [True, False]}),
    "granite-4.0": ("modern/templates", "granite-4.0", {}),
    "llama3.2": ("templates", "llama-3.2-instruct", {}),
    "mistral-v3": ("templates", "mistral-7b-instruct-v0.3", {}),
    "mistral-nemo": ("templates", "mistral-nemo-instruct-2407", {}),
    "mistral-small-3.2": ("modern/templates", "mistral-small-3.2", {}),
    "llama-4": ("modern/templates", "llama-4", {}),
}
#: entries that test a built-in under another name (a byte-identical official template)
SAME = {"llama3.3": "llama3.1"}
#: bos/eos the official templates are rendered with
TOKENS = {"llama3.1": {"bos_token": "<|begin_of_text|>"}, "llama3.3": {"bos_token": "<|begin_of_text|>"},
          "llama3.2": {"bos_token": "<|begin_of_text|>"},
          "gemma-4": {"bos_token": "<bos>"},
          "mistral-v3": {"bos_token": "<s>", "eos_token": "</s>"}, "mistral-nemo": {"bos_token": "<s>", "eos_token": "</s>"},
          "mistral-small-3.2": {"bos_token": "<s>", "eos_token": "</s>"}}
TOKENS["deepseek-v3.1"] = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
TOKENS["llama-4"] = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>"}
TOKENS["hermes-3"] = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"}


#: the time strftime_now reads (Llama 3.2's date), in the official and compiled templates and in render(now=)
NOW = dt.datetime(2026, 3, 9, 12, 0)


@pytest.fixture(scope="module", autouse=True)
def _frozen_clock():
    with frozen_clock(NOW):
        yield


def _official(conformance, where: str, name: str) -> str:
    return (conformance / where / f"{name}.jinja").read_text()


def _hf(template, messages, tools, gen, variables, *, masks=False):
    try:
        out = hf.render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                       add_generation_prompt=gen, return_assistant_tokens_mask=masks, **variables)
    except (jinja2.TemplateError, TypeError):  # TypeError: Hermes 3 iterates `tools`, None without them
        return None
    return out if masks else out[0][0]


def _ours(spec, messages, tools, gen, variables):
    try:
        return render(spec, messages, tools=tools, add_generation_prompt=gen, variables=variables, now=NOW)
    except RenderError:
        return None


@pytest.mark.parametrize("name", sorted(AGENTIC))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv=agentic_conversations(), gen=st.booleans(), data=st.data())
def test_agentic_builtin_matches_official_template(conformance, name, conv, gen, data):
    messages, tools = conv
    where, official, switches = AGENTIC[name]
    variables = {k: data.draw(st.sampled_from(v)) for k, v in switches.items()}
    if variables and data.draw(st.booleans()):
        variables = {}  # the template's own default
    spec = load_builtin(SAME.get(name, name))
    expected = _hf(_official(conformance, where, official), messages, tools, gen, {**variables, **TOKENS.get(name, {})})
    ours = _ours(spec, messages, tools, gen, variables)
    assert (ours.text if ours else None) == expected
    for training in (False, True):
        assert _hf(compile_template(spec, training=training), messages, tools, gen, variables) == expected


@pytest.mark.parametrize("name", sorted(AGENTIC))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(gen=st.booleans(), data=st.data())
def test_agentic_builtin_matches_official_on_plain_chat(conformance, name, gen, data):
    """Plain conversations of any role order (system messages anywhere where the template takes them)."""
    where, official, switches = AGENTIC[name]
    variables = {k: data.draw(st.sampled_from(v)) for k, v in switches.items()}
    spec = load_builtin(SAME.get(name, name))
    messages = data.draw(conversations(system="many" if spec.placement == "in_place" else "maybe"))
    expected = _hf(_official(conformance, where, official), messages, None, gen, {**variables, **TOKENS.get(name, {})})
    ours = _ours(spec, messages, None, gen, variables)
    assert (ours.text if ours else None) == expected
    assert _hf(compile_template(spec, training=True), messages, None, gen, variables) == expected


@pytest.mark.parametrize("name", sorted(AGENTIC))
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv=agentic_conversations(), data=st.data())
def test_generation_spans_are_the_trained_spans(name, conv, data):
    """Tool calls and reasoning are trained with the assistant turn; tool results, tool
    definitions, the text after the end-of-turn token and an empty think block the
    generation prompt supplies are not."""
    messages, tools = conv
    switches = AGENTIC[name][2]
    variables = {k: data.draw(st.sampled_from(v)) for k, v in switches.items()}
    spec = load_builtin(SAME.get(name, name))
    rendered = _ours(spec, messages, tools, False, variables)
    assume(rendered is not None)  # Llama 3.1 takes one call per turn
    out = _hf(compile_template(spec, training=True), messages, tools, False, variables, masks=True)
    (text,), (indices,) = out
    assert text == rendered.text
    got = [(a, b) for a, b in indices if b > a]
    assert got == rendered.trained_spans()
    for seg in rendered.segments:
        if seg.kind in ("tool", "tools", "assistant_end", "system", "user"):
            assert not any(a < seg.end and seg.start < b for a, b in got), seg


def test_qwen3_empty_think_block_is_prompt_when_thinking_is_off():
    spec = load_builtin("qwen3")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    off = render(spec, messages, variables={"enable_thinking": False})
    on = render(spec, messages)
    assert off.text == on.text == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
                                   "Hello<|im_end|>\n")
    assert [off.text[a:b] for a, b in off.trained_spans()] == ["Hello<|im_end|>"]
    assert [on.text[a:b] for a, b in on.trained_spans()] == ["<think>\n\n</think>\n\nHello<|im_end|>"]


def test_tool_calls_are_trained_and_results_are_not():
    spec = load_builtin("qwen2.5")
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"city": "Zürich"}}}
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]
    r = render(spec, messages, tools=[{"type": "function", "function": {"name": "f"}}])
    # the newline after the header is the generation prompt's (`<|im_start|>assistant\n`): prompt, not trained
    assert [r.text[a:b] for a, b in r.trained_spans()] == [
        '<tool_call>\n{"name": "f", "arguments": {"city": "Zürich"}}\n</tool_call><|im_end|>', "Sunny.<|im_end|>"]
    assert json.loads(r.text.split("<tools>\n")[1].split("\n</tools>")[0]) == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize("messages,tools,pattern", [
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}], None, "message 1: .*tool calls"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}], None, "message 1: .*tool results"),
    ([{"role": "user", "content": "x"}], [{"type": "function", "function": {"name": "f"}}], "tool definitions"),
])
def test_a_format_without_tools_refuses_them(messages, tools, pattern):
    with pytest.raises(RenderError, match=pattern):
        render(load_builtin("chatml"), messages, tools=tools)


def test_typed_switch_refuses_a_string():
    with pytest.raises(RenderError, match="enable_thinking` must be true or false"):
        render(load_builtin("qwen3"), [{"role": "user", "content": "x"}], variables={"enable_thinking": "false"})


def test_llmforge_stopping_sequences_end_the_trained_suffix():
    from template_forge.format.spec import spec_from_dict

    config = {"model_id": "m", "generation_config": {
        "prompt_format": {"system": "{instruction}", "user": "U:{instruction}\n", "assistant": "A:{instruction}<eot>\n"},
        "stopping_sequences": ["<eot>"]}}
    r = render(spec_from_dict(config), [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    assert [r.text[a:b] for a, b in r.trained_spans()] == ["a<eot>"]
    assert r.text.endswith("<eot>\n")
