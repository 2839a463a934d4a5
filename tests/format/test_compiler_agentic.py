"""The compiled template renders exactly what render() renders on generated *agentic specs*:
random combinations of tools, tool calls, tool results, reasoning, stop strings,
final_assistant, typed variables and generation-prompt alternatives over varied plain fields,
on generated agentic conversations, under transformers' renderer in both flavours; the
training flavour's ``{% generation %}`` spans are the renderer's trained spans; and the
generation prompt keeps the prefix promise where ``promises_prefix`` makes it.

Sized for CI; ``TFORGE_EXAMPLES=2000`` (as for tests/tokens) runs every property longer, and
``TFORGE_RANDOM=1`` draws new examples each run instead of the same derandomized ones.
"""

from __future__ import annotations

import os

import jinja2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from template_forge.errors import RenderError, SpecError
from template_forge.format.compiler import compile_template
from template_forge.format.render import promises_prefix, render
from template_forge.format.spec import Spec, load_builtin, spec_from_dict

from strategies import (
    TRICKY,
    agentic_conversations,
    agentic_spec_dicts,
    conversations,
    tool_schemas,
    varied_agentic_conversations,
)

hf = pytest.importorskip("transformers.utils.chat_template_utils")


def _settings(default: int):
    return settings(max_examples=int(os.environ.get("TFORGE_EXAMPLES", default)), deadline=None,
                    derandomize=not os.environ.get("TFORGE_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: (messages, tools): agentic conversations, and plain ones (system messages anywhere) with or without tools
agentic_or_plain = st.one_of(
    agentic_conversations(), varied_agentic_conversations(),
    st.tuples(conversations(system="many", min_turns=0), st.one_of(st.none(), tool_schemas())))

#: Segments never trained, whatever the spec (docs/masks.md).
UNTRAINED = ("bos", "system", "tools", "user", "assistant_prefix", "assistant_end", "tool", "generation_prompt",
             "final_suffix")


def _variables(spec: Spec, data) -> dict:
    """Values for some of the spec's variables, each of its type, as apply_chat_template passes them."""
    out = {}
    for var in spec.variables:
        if not data.draw(st.booleans()):
            continue
        if data.draw(st.integers(0, 9)) == 0:  # a value of another type, or no choice: both refuse it
            out[var.name] = data.draw(st.sampled_from(["false", True, "high", None]))
        elif var.kind == "clock":
            continue
        elif var.kind == "bool":
            out[var.name] = data.draw(st.booleans())
        elif var.kind == "choice":
            out[var.name] = data.draw(st.sampled_from(var.choices))
        else:
            out[var.name] = data.draw(st.sampled_from(TRICKY))
    return out


def _ours(spec, messages, tools, gen, variables):
    try:
        return render(spec, messages, tools=tools, add_generation_prompt=gen, variables=variables)
    except RenderError:
        return None


def _hf(spec, messages, tools, gen, variables, *, training: bool):
    """transformers' render of the compiled template: (text, generation spans), or None when
    the template refuses through raise_exception (any other Jinja error is a compiler bug)."""
    template = compile_template(spec, training=training)
    try:
        out, indices = hf.render_jinja_template(
            conversations=[messages], tools=tools, chat_template=template, add_generation_prompt=gen,
            return_assistant_tokens_mask=training, **variables)
    except jinja2.TemplateError as exc:
        assert type(exc) is jinja2.TemplateError, f"the compiled template broke: {exc!r}"
        return None
    return out[0], ([tuple(x) for x in indices[0] if x[0] != x[1]] if training else None)


def _merged(spans):
    out = []
    for s, e in spans:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


# --------------------------------------------------------------------------- a) same text, same refusals
@_settings(500)
@given(agentic_spec_dicts(), agentic_or_plain, st.booleans(), st.data())
def test_compiled_equals_render_for_agentic_specs(d, conv, gen, data):
    """Both flavours render render()'s text, or refuse (through raise_exception) where it
    refuses; the training flavour's generation spans are its trained spans."""
    spec = spec_from_dict(d)
    messages, tools = conv
    variables = _variables(spec, data)
    ours = _ours(spec, messages, tools, gen, variables)
    event(f"render() refuses: {ours is None}")
    for training in (False, True):
        got = _hf(spec, messages, tools, gen, variables, training=training)
        assert (got and got[0]) == (ours and ours.text), "render() and the compiled template disagree"
        if got and training:
            assert _merged(got[1]) == ours.trained_spans()


# --------------------------------------------------------------------------- b) the trained spans
@_settings(300)
@given(agentic_spec_dicts(), st.one_of(agentic_conversations(), varied_agentic_conversations()), st.data())
def test_generation_spans_are_the_trained_spans(d, conv, data):
    """Generation spans = trained spans; tool calls and reasoning lie inside them; tool
    results, definitions, system, user, the text after the stop string and what the
    generation prompt supplies lie outside."""
    spec = spec_from_dict(d)
    messages, tools = conv
    tools = tools if spec.tools else None  # refused without a tools field: test a) checks that
    variables = _variables(spec, data)
    ours = _ours(spec, messages, tools, False, variables)
    event(f"render() refuses: {ours is None}")
    if ours is None:
        return
    text, spans = _hf(spec, messages, tools, False, variables, training=True)
    assert text == ours.text and _merged(spans) == ours.trained_spans()
    trained = ours.trained_spans()
    for seg in ours.segments:
        if seg.kind in ("assistant_reasoning", "assistant_calls"):
            assert any(a <= seg.start and seg.end <= b for a, b in trained), seg
        if seg.kind in UNTRAINED:
            assert not any(a < seg.end and seg.start < b for a, b in trained), seg
    _assert_prompt_is_not_trained(spec, messages, tools, variables, ours)


def _assert_prompt_is_not_trained(spec, messages, tools, variables, ours) -> None:
    """Where the generation prompt after ``messages[:i]`` lines up with the header and body of
    assistant turn ``i`` (not its suffix, nor later text: a coincidence), none of what it
    supplies is trained: the turn's trained text starts after it."""
    for index, start, end in ours.assistant_turns:
        body_end = next((seg.start for seg in ours.segments if seg.message_index == index and
                         seg.kind == "assistant_suffix"), end)
        prompt = _ours(spec, messages[:index], tools, True, variables)
        if prompt is not None and ours.text[:body_end].startswith(prompt.text):
            assert start >= len(prompt.text), (index, prompt.text[start:])


# --------------------------------------------------------------------------- c) the prefix promise
#: conversations whose system message, if any, comes first (the promise is for those)
system_first = st.one_of(
    agentic_conversations(),
    st.tuples(conversations(system="maybe"), st.one_of(st.none(), tool_schemas())))


@_settings(300)
@given(agentic_spec_dicts(prefix=True), system_first, st.data())
def test_prefixes_are_prefixes_where_promised(d, conv, data):
    """``messages[:k]`` with the generation prompt is a prefix of the whole conversation when
    message ``k`` is an assistant turn; without it, ``messages[:k]`` is, for every ``k``.

    Only where ``promises_prefix`` promises it: ``reasoning.keep: after_last_user`` breaks it
    (the prompt after a tool result shows the reasoning of the answers since the last user
    turn, which a later user turn cuts from the whole), and so does ``final_assistant`` (the
    last answer's header is not the generation prompt); so do a final suffix, a system text or
    tool definitions that move to a later user turn, and a generation prompt that is not
    every assistant header.
    """
    spec = spec_from_dict(d)
    messages, tools = conv
    tools = tools if spec.tools else None
    variables = _variables(spec, data)
    full = _ours(spec, messages, tools, False, variables)
    if full is None:
        return
    with_prompt, plain = promises_prefix(spec, generation_prompt=True), promises_prefix(spec)
    event(f"promised: with the generation prompt {with_prompt}, without {plain}")
    for k in range(1, len(messages)):
        head = _ours(spec, messages[:k], tools, True, variables) if with_prompt else None
        if head is not None and messages[k]["role"] == "assistant":
            assert full.text.startswith(head.text), ("generation prompt", k)
        part = _ours(spec, messages[:k], tools, False, variables) if plain else None
        if part is not None:
            assert full.text.startswith(part.text), ("plain", k)


def test_prefix_strategy_makes_promises():
    """The prefix property is not vacuous: the strategy's specs often promise it."""
    promised = []

    @settings(max_examples=60, derandomize=True, database=None)
    @given(agentic_spec_dicts(prefix=True))
    def count(d):
        promised.append(promises_prefix(spec_from_dict(d), generation_prompt=True))

    count()
    assert sum(promised) >= 10


# --------------------------------------------------------------------------- what the properties found
PLAIN = {"system": "S:{instruction}\n", "user": "U:{instruction}\n", "assistant": "A:{instruction}\n",
         "trailing_assistant": "A:"}
TOOLS = [{"type": "function", "function": {"name": "f"}}]
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"q": 1}}}


def _both(spec, messages, tools=None, **variables):
    """render()'s text and both compiled flavours' (None: refused)."""
    ours = _ours(spec, messages, tools, False, variables)
    return [ours and ours.text] + [(got and got[0]) for got in
                                   (_hf(spec, messages, tools, False, variables, training=t) for t in (False, True))]


def test_a_plain_format_refuses_tools_in_the_template_too():
    assert _both(spec_from_dict(PLAIN), [{"role": "user", "content": "x"}], TOOLS) == [None, None, None]


def test_a_string_variable_of_another_type_is_refused_by_both():
    spec = spec_from_dict({**PLAIN, "user": "U{who}:{instruction}\n", "variables": {"who": "me"}})
    assert _both(spec, [{"role": "user", "content": "x"}], who=None) == [None, None, None]
    assert _both(spec, [{"role": "user", "content": "x"}], who="you") == ["Uyou:x\n"] * 3


@pytest.mark.parametrize("placement", ["drop", "reject"])
def test_tools_block_without_a_system_text(placement):
    spec = spec_from_dict({**PLAIN, "system_placement": placement, "tools": {"system": "T[{instruction}{tools}]\n"}})
    text = 'T[{"type": "function", "function": {"name": "f"}}]\nU:x\n'
    assert _both(spec, [{"role": "user", "content": "x"}], TOOLS) == [text] * 3


def test_tools_user_takes_the_system_text_and_strips_with_it():
    spec = spec_from_dict({**PLAIN, "user": "[{system}{instruction}]", "system_placement": "first_user",
                           "strip": {"user": "with_system"}, "tools": {"user": "<{tools}>[{system}{instruction}]"}})
    messages = [{"role": "system", "content": " sys "}, {"role": "user", "content": " q "}]
    ours, inference, training = _both(spec, messages, TOOLS)
    assert ours.endswith("[S: sys \n q]") and inference == training == ours


@pytest.mark.parametrize("fields,pattern", [
    ({"system_placement": "first_user", "user": "{system}{instruction}", "tools": {"system": "{instruction}{tools}"}},
     r"tools\.system`: is given, but `system_placement` is 'first_user'"),
    ({"system_placement": "last_user", "user": "{system}{instruction}", "tools": {"user": "{tools}{instruction}"}},
     r"tools\.user`: must contain `\{system\}` exactly once"),
    ({"system_placement": "first_user", "user": "{system}{instruction}", "strip": {"user": "with_system"},
      "tools": {"user": "{system}{tools}{instruction}"}}, r"strip\.user`: .*`tools\.user` must contain `\{system\}\{instruction\}`"),
])
def test_tools_in_user_turns_refused_where_meaningless(fields, pattern):
    with pytest.raises(SpecError, match=pattern):
        spec_from_dict({**PLAIN, **fields})


def test_prefix_promise_sees_the_tool_call_header():
    qwen = load_builtin("qwen2.5")  # header `<|im_start|>assistant`, prompt with `\n`: every call turn starts with it
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [CALL]}]
    assert promises_prefix(qwen, generation_prompt=True)
    assert render(qwen, messages, tools=TOOLS).text.startswith(render(qwen, messages[:1], tools=TOOLS,
                                                                      add_generation_prompt=True).text)
    calls = {"each": "{name}", "assistant": "C:{calls}\n"}
    assert not promises_prefix(spec_from_dict({**PLAIN, "tool_calls": calls}), generation_prompt=True)
    assert promises_prefix(spec_from_dict({**PLAIN, "tool_calls": {**calls, "assistant": "A{calls}", "each": ":{name}"}}),
                           generation_prompt=True)
    last = {**PLAIN, "tools": {"user": "{tools}U:{instruction}\n", "user_turn": "last"}}
    assert not promises_prefix(spec_from_dict(last), generation_prompt=True)
    final = {**PLAIN, "reasoning": {"block": "<t>{instruction}</t>", "empty": "final"}}
    assert not promises_prefix(spec_from_dict(final))
