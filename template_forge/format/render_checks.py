"""What the renderer refuses, before it writes anything: the conversation's shape, its system
message, alternation, call ids, and what the format cannot render (tool calls, results,
strings it refuses in assistant text). The compiled template refuses the same
(:mod:`template_forge.format.compile_checks`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from template_forge.errors import RenderError
from template_forge.format import turns
from template_forge.format.messages import TOOL_ROLES, Message, MessageError, check_messages
from template_forge.format.spec import Spec


def check_conversation(messages: Any) -> list[Message]:
    if type(messages) is not list and (not isinstance(messages, Sequence) or isinstance(messages, (str, bytes))):
        raise RenderError(f"a conversation must be a list of messages, found {type(messages).__name__}.")
    try:
        return check_messages(messages)
    except MessageError as exc:
        raise RenderError(str(exc), message_index=exc.message_index) from None


def _find_system(msgs: list[Message]) -> tuple[int | None, str | None]:
    found = [m for m in msgs if m.role == "system"]
    if len(found) > 1:
        raise RenderError(
            f"messages {found[0].index} and {found[1].index} are both system messages; at most one is "
            "supported. Merge them into one.", message_index=found[1].index)
    return (found[0].index, found[0].content) if found else (None, None)


def alternation_break(roles: Iterable[str]) -> tuple[int, str] | None:
    """The first message that breaks user/assistant/user/… (system messages aside), and the
    role expected there; None when the roles alternate.

    Examples:
        >>> alternation_break(["system", "user", "user"])
        (2, 'assistant')
    """
    turn = 0
    for i, role in enumerate(roles):
        if role == "system" or role in TOOL_ROLES:
            continue
        expected = "user" if turn % 2 == 0 else "assistant"
        if role != expected:
            return i, expected
        turn += 1
    return None


def check_alternation(spec: Spec, msgs: list[Message]) -> None:
    """Mistral's rule: tool results and assistant turns with tool calls stand outside the
    alternation; with ``system_in_alternation`` a system message other than message 0 takes a
    turn where an assistant turn would (Mistral Small 3 counts it as a non-user turn)."""
    kept = [m for m in msgs if not m.tool_calls]
    counted = spec.system_in_alternation
    found = alternation_break("assistant" if counted and m.role == "system" and m.index else m.role for m in kept)
    if found:
        i, expected = found
        raise RenderError(
            f"roles must alternate user/assistant/user/… after the optional system message; "
            f"expected {expected}, found {kept[i].role}. Merge consecutive messages of the same role.",
            message_index=kept[i].index)


def _check_ids(spec: Spec, msgs: list[Message]) -> None:
    """``id_length``: every call's ``id`` and every result's ``tool_call_id`` has that length
    (Mistral's templates refuse other ids)."""
    calls = spec.tool_calls.id_length if spec.tool_calls is not None else None
    results = spec.tool_results.id_length if spec.tool_results is not None else None
    for m in msgs:
        for k, call in enumerate(m.tool_calls if calls is not None else ()):
            if call.id is None or len(call.id) != calls:
                raise RenderError(f"tool call {k} has `id` {call.id!r}; this format takes ids of exactly {calls} "
                                  f"characters (e.g. {'aB3dE6gH9kLm'[:calls]!r}). Give every call such an id, and "
                                  "its result the same `tool_call_id`.", message_index=m.index)
        if results is not None and m.role in TOOL_ROLES and (m.tool_call_id is None or len(m.tool_call_id) != results):
            raise RenderError(f"this tool result has `tool_call_id` {m.tool_call_id!r}; this format takes ids of "
                              f"exactly {results} characters. Give it the id of the call it answers.",
                              message_index=m.index)


def check_support(spec: Spec, msgs: list[Message]) -> None:
    _check_agentic_domain(spec, msgs)
    _check_ids(spec, msgs)
    for m in msgs:
        if m.tool_calls and spec.tool_calls is None:
            raise RenderError("this assistant message has tool calls, which this format cannot render. Use a "
                              "format with tool support (see `tforge formats`), or drop the calls.", message_index=m.index)
        if m.role in TOOL_ROLES and (spec.tool_results is None or m.role not in spec.tool_results.roles):
            raise RenderError(f"this format cannot render tool results (role `{m.role}`). Use a format with tool "
                              "support (see `tforge formats`), or drop the message.", message_index=m.index)
        if m.role == "assistant" and spec.refuse_in_assistant:
            _check_refused(spec, m)


def _check_refused(spec: Spec, m: Message) -> None:
    for text in spec.refuse_in_assistant:
        # the reasoning only where the format renders it (DeepSeek V3.1 ignores it)
        shown = (("reasoning", m.reasoning),) if spec.reasoning is not None else ()
        for key, value in (("content", m.content), *shown):
            if value is not None and text in value:
                raise RenderError(f"this assistant message's {key} holds {text!r}, which the format refuses there (its "
                                  "template would read it as its own markup). Remove it.", message_index=m.index)


def _check_agentic_domain(spec: Spec, msgs: list[Message]) -> None:
    """What a format refuses because its official template renders it in a way the spec
    cannot say: tool results that answer no assistant turn, results whose tool name cannot be
    resolved (strings it rewrites in assistant text: :func:`_check_refused`)."""
    if not (spec.tool_calls or spec.tool_results or spec.reasoning):
        return
    previous = None
    for m in msgs:
        if m.role in TOOL_ROLES and spec.tool_results is not None:
            _check_result(spec, m, previous)
        if m.role not in TOOL_ROLES:
            previous = m
    r = spec.reasoning
    if r is not None and r.turns == "tool_calls" and r.keep == "after_last_user" and \
            not any(m.role == "user" for m in msgs) and any(turns.reasoning_of(spec, m) and m.tool_calls for m in msgs):
        # Gemma 4 keeps every call turn's reasoning when there is no user message; Qwen3 none.
        raise RenderError("the reasoning of a turn with tool calls is kept after the last user message, but this "
                          "conversation has none. Add a user message, or drop the reasoning.")


def _check_result(spec: Spec, m: Message, previous: Message | None) -> None:
    results = spec.tool_results
    calls = previous.tool_calls if previous is not None and previous.role == "assistant" else ()
    if results.require_calls and not calls:
        raise RenderError("this tool result follows no assistant message with tool calls (other results aside); "
                          "the format does not render it. Put it after the call it answers.", message_index=m.index)
    if results.name == "call" and turns.result_name(m, calls) is None:
        raise RenderError("this tool result has no `name`, and its `tool_call_id` answers no call of the assistant "
                          "message before it. Give it the tool's name, or the id of its call.", message_index=m.index)


def system_message(spec: Spec, msgs: list[Message]) -> tuple[int | None, str | None]:
    """The conversation's system message (index, text), refused where the format has none;
    ``(None, None)`` with ``in_place``, which renders every system message where it is."""
    if spec.placement == "in_place":
        return None, None
    sys_index, sys_raw = _find_system(msgs)
    if sys_index is not None and sys_index != 0 and spec.system_position == "first":
        raise RenderError("this format takes a system message only as the conversation's first message (its template "
                          "drops one elsewhere). Move it to the start, or drop it.", message_index=sys_index)
    if sys_index is not None and spec.placement == "reject":
        raise RenderError(
            "this format does not support a system message. Drop it, or use a format whose "
            "`system_placement` is not `reject`.", message_index=sys_index)
    return sys_index, sys_raw
