"""Reference renderer: the one definition of what a spec means.

``render(spec, messages)`` returns the text and the character span of every segment.
The segments tile the text (contiguous, in order, no gaps). For the llmforge Llama 3
format and ``[system, user, assistant]``::

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nBe brief.<|eot_id|>…
    └─── bos ───────┘└──────────────── system (message 0) ─────────────────────┘
    …<|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>…
     └──────────────── user (message 1) ───────────────────┘
    …<|start_header_id|>assistant<|end_header_id|>\\n\\nHello<|eot_id|>
     └──────── assistant_prefix (2) ─────────────┘└content┘└suffix─┘
                                                   └── trained ───┘

``assistant_content`` + ``assistant_suffix`` are what the model learns to say (the
suffix carries the end-of-turn token, so the model learns to stop); with ``stop`` strings,
the suffix's text after the end-of-turn token is ``assistant_end``, never trained, as the
model never generates it. Reasoning, tool calls and tool results have kinds of their own.
The compiled training template wraps exactly the trained spans in ``{% generation %}``.
The turns themselves are written by :mod:`template_forge.format.turns`.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping, Sequence

from template_forge.errors import RenderError
from template_forge.format import render_checks, turns
from template_forge.format.agentic import holds
from template_forge.format.messages import TOOL_ROLES, Message, MessageError, check_tools
from template_forge.format.rendered import Rendered, Segment, _Builder  # noqa: F401 (Segment: public here)
from template_forge.format.roles import fill
from template_forge.format.spec import OWN_SEGMENT_PLACEMENTS, Spec

#: Segment kinds, in the order they can appear inside one message.
SEGMENT_KINDS = (
    "bos", "system", "tools", "user", "assistant_prefix", "assistant_reasoning", "assistant_content",
    "assistant_calls", "assistant_suffix", "assistant_end", "tool", "generation_prompt", "final_suffix",
)


# --------------------------------------------------------------------------- system decisions
def system_decision(spec: Spec, sys_index: int | None, sys_raw: str | None) -> tuple[bool, str]:
    """Whether the system template is rendered, and with which (stripped) text."""
    if sys_index is not None:
        raw, present = sys_raw or "", True
    else:
        raw = spec.default_system_message
        present = bool(raw) or spec.add_system_tags
    text = raw.strip() if spec.strip_system else raw
    if not present or spec.placement in ("drop", "reject"):
        return False, text
    if spec.add_system_tags or spec.empty_system == "render":
        return True, text
    if spec.empty_system == "drop":
        return text != "", text
    # auto: llmforge drops an empty *own* system message (tested before stripping), but
    # renders the system template into the user turn for any system message it has.
    return (raw != "" if spec.placement in OWN_SEGMENT_PLACEMENTS else True), text


def system_target(spec: Spec, msgs: list[Message]) -> int | None:
    """Index of the user message that receives ``{system}``, if any."""
    users = [m.index for m in msgs if m.role == "user"]
    if spec.placement == "first_user" and users:
        return users[0]
    if spec.placement == "last_user" and users:
        return users[-1]
    if spec.placement == "final_user" and msgs and msgs[-1].role == "user":
        return msgs[-1].index
    return None


# --------------------------------------------------------------------------- rendering
def _values(spec: Spec, variables: Mapping[str, Any] | None, now: datetime | None) -> dict[str, Any]:
    """Every variable's value: the caller's (checked against its type), else the default; a
    clock reads ``now`` (default: the time of rendering), as ``strftime_now`` does."""
    values = spec.variable_defaults()
    given = dict(variables or {})
    for name in spec.unsupported_variables:  # the official template reads it; we render it unset only
        if given.pop(name, None):
            raise RenderError(f"template variable `{name}` is set, but this format does not render it (its official "
                              "template does). Leave it unset.")
    for var in spec.variables:
        if var.kind == "derived":
            if var.name in given:
                raise RenderError(f"template variable `{var.name}` is derived from "
                                  f"{', '.join(k for k, _ in var.derived[0])}; set those instead.")
            continue
        if var.name not in given:
            if var.kind == "clock":
                values[var.name] = (now or datetime.now()).strftime(var.strftime)
            continue
        value = given.pop(var.name)
        wanted = bool if var.kind == "bool" else str
        if type(value) is not wanted:
            raise RenderError(f"template variable `{var.name}` must be {'true or false' if wanted is bool else 'a string'}"
                              f", found {type(value).__name__} {value!r}.")
        if var.choices is not None and value not in var.choices:
            raise RenderError(f"template variable `{var.name}` is {value!r}, not one of {', '.join(var.choices)}.")
        values[var.name] = value
    if given:
        known = ", ".join(spec.variable_defaults()) or "none"
        raise RenderError(f"unknown template variable `{next(iter(given))}`; this format declares: {known}.")
    for var in spec.variables:
        if var.kind == "derived":
            when, text, otherwise = var.derived
            values[var.name] = text if holds(when, values) else otherwise
    return values


def generation_prompt(spec: Spec, values: Mapping[str, Any]) -> str:
    """The generation prompt under these variable values: the first ``generation_prompt``
    alternative whose conditions hold, else ``trailing_assistant``."""
    for alt in spec.generation_prompts:
        if holds(alt.when, values):
            return alt.text
    return spec.trailing_assistant


def _ending_prompt(spec: Spec, msgs: list[Message], gen: str) -> str:
    """The generation prompt after the last message: ``tool_results.generation_prompt`` after
    tool results, ``tool_calls.generation_prompt`` after a turn with calls, else ``gen``."""
    last = msgs[-1] if msgs else None
    if last is not None and last.role in TOOL_ROLES and spec.tool_results.generation_prompt is not None:
        return spec.tool_results.generation_prompt
    if last is not None and last.tool_calls and spec.tool_calls.generation_prompt is not None:
        return spec.tool_calls.generation_prompt
    return gen


def render(spec: Spec, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False,
           variables: Mapping[str, Any] | None = None, tools: Sequence[Mapping[str, Any]] | None = None,
           now: datetime | None = None) -> Rendered:
    """Render a conversation (OpenAI-style ``messages``) with a spec.

    Args:
        spec: the prompt format.
        messages: ``[{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}, ...]``;
            assistant messages may carry ``tool_calls`` and ``reasoning_content``, tool results
            ``tool_call_id`` and ``name``; other keys are ignored. At most one system message,
            wherever it is (any number with ``system_placement: in_place``).
        add_generation_prompt: append the generation prompt (inference); otherwise append
            ``final_suffix``.
        variables: values for the spec's template variables (defaults from the spec), typed
            as declared (``enable_thinking=False``), as ``apply_chat_template`` passes them.
        tools: function schemas, as ``apply_chat_template(tools=...)`` takes them.
        now: the time a clock variable reads (default: now), as a frozen ``strftime_now``.

    Raises:
        RenderError: for a conversation the format cannot render, naming the message index.

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> render(load_builtin("llmforge-mistral"), [{"role": "system", "content": "hello1"},
        ...        {"role": "user", "content": "hello2"}]).text
        '[INST] hello1 + hello2 [/INST]'
    """
    msgs = render_checks.check_conversation(messages)
    values = _values(spec, variables, now)
    if spec.default_system is not None:  # `default_system_variables`: the default names variables (a clock)
        spec = replace(spec, default_system_message=fill(spec.default_system.pieces, values), default_system=None)
    defs = _definitions(spec, tools)
    render_checks.check_support(spec, msgs)
    sys_index, sys_raw = render_checks.system_message(spec, msgs)
    if spec.require_alternation:
        render_checks.check_alternation(spec, msgs)
    emit, sys_text = system_decision(spec, sys_index, sys_raw)
    opens_with_system = bool(msgs) and msgs[0].role == "system"
    if spec.placement == "in_place" and opens_with_system:
        emit = False  # the default stands in only when the conversation does not open with a system message
    out = _Builder(apart=spec.tokenize_apart)
    out.add("bos", spec.bos)
    skip = _add_opening(out, spec, msgs, values, defs, emit=emit, sys_text=sys_text, sys_index=sys_index,
                        opens=opens_with_system)
    target = system_target(spec, msgs) if emit else None
    gen = generation_prompt(spec, values)
    _add_turns(out, spec, msgs, values, sys_text=sys_text if target is not None else None, sys_index=sys_index,
               target=target, skip=skip, gen=gen, defs=defs if defs is not None and spec.tools.user else None,
               prompted=add_generation_prompt)
    if add_generation_prompt:
        after = spec.generation_prompt_after
        prompted = after is None or previous_role(msgs, len(msgs)) in after
        out.add("generation_prompt", _ending_prompt(spec, msgs, gen) if prompted else "")
    else:
        out.add("final_suffix", spec.final_suffix)
    return out.build()


def _add_opening(out: _Builder, spec: Spec, msgs: list[Message], values: Mapping[str, Any], defs: str | None, *,
                 emit: bool, sys_text: str | None, sys_index: int | None, opens: bool) -> int | None:
    """The blocks before the first turn: the tools system block (which may take the system
    message: its index is returned, to be skipped), else the system block as the spec writes it."""
    if defs is not None and spec.tools.system is not None and not spec.tools.standalone:
        return _add_tools_system(out, spec, msgs, values, defs, emit=emit, sys_text=sys_text, sys_index=sys_index,
                                 opens=opens)
    if defs is not None and spec.tools.system is not None:  # standalone: a block before the system message
        turns.add_tools_system(out, spec, None, None, values, defs)
    if spec.system_text is not None:  # always rendered, the system text (if any) wrapped
        turns.add_wrapped_system(out, spec, spec.system, spec.system_text, sys_text if emit else None, sys_index,
                                 values)
    elif spec.opening_system is not None and not opens:
        if emit or holds(spec.opening_system.present_when, values):  # the default stands in
            turns.add_system(out, spec, sys_text, None, values, spec.opening_system.template)
    elif emit and spec.placement in OWN_SEGMENT_PLACEMENTS:
        turns.add_system(out, spec, sys_text, sys_index, values)
    return None


def _add_tools_system(out: _Builder, spec: Spec, msgs: list[Message], values: Mapping[str, Any], defs: str, *,
                      emit: bool, sys_text: str, sys_index: int | None, opens: bool) -> int | None:
    """``tools.system`` in place of the system block; with ``in_place`` it takes the opening
    system message (whose index is returned: the loop skips it) or the default."""
    skip = None
    if spec.placement == "in_place":
        skip = 0 if opens else None
        emit, sys_text = system_decision(spec, skip, msgs[0].content if opens else None)
        if spec.default_system_when == "empty" and not opens:
            emit = False  # the definitions fill the opening block: no default stands in (Granite 4.0)
        sys_index = skip
    if spec.tools.system_when == "given" and not emit:
        return skip  # no system message renders: no tools block either (Llama 4)
    turns.add_tools_system(out, spec, sys_text if emit else None, sys_index, values, defs)
    return skip


def _definitions(spec: Spec, tools: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The tool definitions' text, or None when no tools are given (an empty list is none)."""
    try:
        schemas = check_tools(tools)
    except MessageError as exc:
        raise RenderError(f"tools: {exc}") from None
    if schemas and spec.tools is not None and spec.tools.ignore:
        return None  # accepted, not written
    if not schemas:
        if spec.tools is not None and spec.tools.required:
            raise RenderError("this format always writes tool definitions (its official template fails without "
                              "them), but no tools were given. Pass tools=[...] with at least one tool, or use a "
                              "format without tools for plain chat.")
        return None
    if spec.tools is None:
        raise RenderError("this format does not render tool definitions, but tools were given. Use a format "
                          "with tool support (see `tforge formats`), or leave the tools out.")
    try:
        return turns.definitions(spec, schemas)
    except ValueError as exc:  # a named serialiser refusing a schema it cannot write (e.g. hermes_signature)
        raise RenderError(f"tools: {exc}.") from None


def _tools_turns(spec: Spec, msgs: list[Message]) -> set[int]:
    """The user turns that take the definitions: the first, the last, or (``like_last``)
    every user message equal to the last one, as Mistral's ``message == user_messages[-1]``."""
    users = [m for m in msgs if m.role == "user"]
    turn = spec.tools.user_turn
    if not users:
        raise RenderError(f"the tool definitions go into the {turn.replace('_', ' ')} user turn, but this "
                          "conversation has no user message. Add one, or leave the tools out.")
    opening = next((m for m in msgs if m.index > 0 or m.role != "system"), None)
    if turn == "opening" and opening is not None and opening.role != "user":
        raise RenderError(f"message {opening.index}: the tool definitions go into the user turn that opens the "
                          f"conversation (after the system message), but it opens with a `{opening.role}` message. "
                          "Start with a user message, or leave the tools out.")
    if turn == "like_last":
        return {m.index for m in users if m.raw == users[-1].raw}
    return {users[0].index if spec.tools.user_at == "first" else users[-1].index}


def previous_role(msgs: list[Message], k: int) -> str | None:
    """The role of the last message before index ``k``, system messages aside ("tool" for any
    tool-result role); None when there is none."""
    for m in reversed(msgs[:k]):
        if m.role != "system":
            return "tool" if m.role in TOOL_ROLES else m.role
    return None


def _add_turns(out: _Builder, spec: Spec, msgs: list[Message], values: Mapping[str, Any], *,
               sys_text: str | None, sys_index: int | None, target: int | None, skip: int | None, gen: str,
               defs: str | None, prompted: bool = False) -> None:
    """Every message in order; user message ``target`` receives the system text, and the
    ``tools.user`` turn the tool definitions ``defs``; tool results grouped. The last message
    is the final turn, unless ``final_when: no_generation_prompt`` and a prompt follows it."""
    no_system = {**values, "system": ""}
    before, after = spec.user.around("instruction")
    user_around = (fill(before, no_system), fill(after, no_system))
    tools_at = _tools_turns(spec, msgs) if defs is not None else set()
    last_user = max((m.index for m in msgs if m.role == "user"), default=None)
    last = msgs[-1].index if msgs and not (prompted and spec.final_when == "no_generation_prompt") else None
    last_answer = max((m.index for m in msgs if m.role == "assistant" and not m.tool_calls), default=None)
    call_name = None  # the latest tool-call turn's first call (`tool_results.name: latest_call`)
    previous = None  # the last message that is not a tool result
    k = 0
    while k < len(msgs):
        m = msgs[k]
        k += 1
        if m.role == "user":
            turns.add_user(out, spec, m, values, system_text=sys_text if m.index == target else None,
                           sys_index=sys_index, around=user_around, tools=defs if m.index in tools_at else None)
        elif m.role == "assistant":
            continued = spec.continue_assistant_turns and previous is not None and previous.role == "assistant"
            answered = k < len(msgs) and msgs[k].role in TOOL_ROLES
            before = dict(spec.assistant_prefix_after).get(previous_role(msgs, k - 1), "")
            turns.add_assistant(out, spec, m, values, last=m.index == last, last_user=last_user, generation_prompt=gen,
                                last_answer=last_answer, continued=continued, answered=answered, before=before)
            call_name = m.tool_calls[0].name if m.tool_calls else None
        elif m.role in TOOL_ROLES:
            group = [m]
            while k < len(msgs) and msgs[k].role in TOOL_ROLES:
                group.append(msgs[k])
                k += 1
            turns.add_tool_results(out, spec, group, values, calls=previous, call_name=call_name, final=k == len(msgs))
            if previous is not None and previous.tool_calls and spec.tool_calls.after_results is not None:
                turns.add_deferred_content(out, spec, previous, values)
        elif spec.placement == "in_place" and m.index != skip:
            emit_here, text = system_decision(spec, m.index, m.content)
            if m.index == 0 and text == "" and spec.default_system_when == "empty":
                emit_here, text = system_decision(spec, None, None)  # the default stands in for an empty one
            opening = spec.opening_system if m.index == 0 else None
            if emit_here and spec.system_key is not None and m.raw.get(spec.system_key.key) is not None:
                turns.add_keyed_system(out, spec, text, m, values)
            elif emit_here:
                turns.add_system(out, spec, text, m.index, values, opening.template if opening else None)
        if m.role not in TOOL_ROLES:
            previous = m


def promises_prefix(spec: Spec, *, generation_prompt: bool = False) -> bool:
    """Whether rendering a prefix of a conversation gives a prefix of the whole text.

    For a conversation whose system message (if any) comes first, the text of
    ``messages[:k]`` is a prefix of the text of ``messages`` when nothing is appended at
    the end (no ``final_suffix``, no empty reasoning block for the last answer, no closing
    text of a tool-result group) and neither the system text nor the tool definitions move
    to a later user turn (``last_user``/``final_user`` placements, ``tools.user_turn: last``).
    With ``generation_prompt=True`` the promise is this: ``messages[:k]`` rendered with the
    generation prompt is a prefix of ``messages[:k+1]`` when message ``k`` is an assistant
    turn; that holds when the generation prompt is exactly every assistant header (that of
    ``tool_calls.assistant`` too). Inference servers that cache the KV of earlier turns rely
    on this.

    Examples:
        >>> from template_forge.format.spec import load_builtin
        >>> promises_prefix(load_builtin("llama3"), generation_prompt=True)
        True
        >>> promises_prefix(load_builtin("mistral-v3"))
        False
    """
    if spec.final_suffix or spec.placement in ("last_user", "final_user") or spec.final_assistant:
        return False
    if spec.reasoning is not None and spec.reasoning.keep == "after_last_user":
        return False
    if spec.tools is not None and spec.tools.user is not None and spec.tools.user_turn == "last":
        return False  # the definitions move to a later user turn, like the system text with last_user
    if spec.reasoning is not None and spec.reasoning.empty == "final":
        return False  # the last answer's empty block is cut when another answer follows
    if not generation_prompt:  # a tool-result group's closing text waits for the group's end
        return not (spec.tool_results is not None and spec.tool_results.group.around("instruction")[1])
    # the prompt is the assistant header, which holds no variable (the caller may change it); a
    # turn with tool calls may have a header of its own
    before, _ = spec.assistant.around("instruction")
    plain = all(p.field is None for p in before) and fill(before, {}) == spec.trailing_assistant
    calls = spec.tool_calls is None or spec.tool_calls.assistant is None or _calls_turn_starts_with(spec)
    return plain and calls and not spec.generation_prompts


def _calls_turn_starts_with(spec: Spec) -> bool:
    """Whether every turn written by ``tool_calls.assistant`` starts with ``trailing_assistant``:
    its header, then text whatever follows starts with (Qwen2.5's newline before the content
    or the first call)."""
    pieces = spec.tool_calls.assistant.pieces
    k = next(i for i, p in enumerate(pieces) if p.field in ("instruction", "calls"))
    if any(p.field is not None for p in pieces[:k]) or not spec.trailing_assistant.startswith(fill(pieces[:k], {})):
        return False
    rest = spec.trailing_assistant[len(fill(pieces[:k], {})):]
    return all(lead.startswith(rest) for lead in _leads(spec, pieces[k:]))


def _leads(spec: Spec, pieces: Sequence) -> list[str]:
    """Known text that the turn body ``pieces`` starts with, one per way it can start."""
    def literal(ps):  # the literal text before the first field
        return "".join(p.text for p in itertools.takewhile(lambda p: p.field is None, ps))

    if not pieces:
        return [""]
    first, rest = pieces[0], pieces[1:]
    tc = spec.tool_calls
    if first.field is None:
        return [first.text + lead for lead in _leads(spec, rest)]
    if first.field == "calls":
        return [literal(tc.each.pieces), tc.after_content + literal(tc.each.pieces)]
    if first.field != "instruction":
        return [""]  # a variable
    blocks = [literal(spec.reasoning.block.pieces)] if spec.reasoning and spec.reasoning.keep != "never" else []
    return _leads(spec, rest) + [literal(tc.content.pieces)] + blocks  # nothing, the content, the reasoning
