"""The messages of a conversation, checked: roles, text, tool calls, tool results, reasoning.

Messages come in the OpenAI shape that transformers' ``apply_chat_template`` and vLLM take::

    {"role": "user", "content": "Weather in Paris?"}
    {"role": "assistant", "content": null, "reasoning_content": "Look it up.",
     "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}
    {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": "18°C"}

:func:`check_messages` turns such dicts into :class:`Message` records (text parts flattened,
reasoning aliases resolved, call ids matched) or raises :class:`MessageError` for the first
problem, with its :data:`REASONS` code and message index; :func:`check_tools` checks the
``tools`` list. The dicts themselves are never changed.

Examples:
    >>> msgs = check_messages([
    ...     {"role": "user", "content": [{"type": "text", "text": "Weather in "}, "Paris?"]},
    ...     {"role": "assistant", "content": None, "thinking": "Look it up.", "tool_calls": [
    ...         {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
    ...     {"role": "tool", "tool_call_id": "c1", "content": "18°C"}])
    >>> msgs[0].content, msgs[1].content, msgs[1].reasoning, msgs[2].tool_call_id
    ('Weather in Paris?', '', 'Look it up.', 'c1')
    >>> msgs[1].tool_calls[0].name, msgs[1].tool_calls[0].arguments
    ('weather', '{"city": "Paris"}')
    >>> try:
    ...     check_messages([{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}])
    ... except MessageError as exc:
    ...     print(exc.reason, exc.message_index, exc)
    unknown_call_id 1 `tool_call_id` 'c9' answers no tool call of an earlier assistant message (known ids: none). Fix the id, or put the result after the assistant message that makes the call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from template_forge.errors import TemplateForgeError
from template_forge.format import json_text
from template_forge.format.json_text import shorten, show_key

ROLES = ("system", "user", "assistant", "tool", "ipython")
#: Roles of a tool result ("ipython" is Llama 3.1's name for it).
TOOL_ROLES = ("tool", "ipython")

#: Reason codes, in the order the checks of one message run (the renderer's three first).
REASONS = {
    "bad_message": "a message is not an object",
    "unknown_role": "unknown role",
    "bad_content": "content is not text",
    "multimodal": "image, audio or video content",
    "bad_tool_call": "a malformed tool call",
    "bad_arguments": "tool call arguments are not JSON",
    "duplicate_call_id": "two tool calls share an id",
    "unknown_call_id": "a tool result answers no earlier call",
    "bad_tool_result": "a malformed tool result",
    "bad_reasoning": "reasoning is not assistant text",
    "bad_tools": "a malformed `tools` list",
}

_PLAIN_ROLES = ("system", "user", "assistant")
#: transformers' order (``_REASONING_FIELDS``): the first one that is not null wins.
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
#: A plain message has none of these, so the fast path need not look further.
_AGENTIC_KEYS = frozenset(("tool_calls",) + _REASONING_KEYS)
_CALL_KEYS = ("id", "type", "function")
_FUNCTION_KEYS = ("name", "arguments")
_MEDIA = {"image": "an image", "image_url": "an image", "audio": "audio", "input_audio": "audio",
          "video": "a video", "video_url": "a video"}
_SHAREGPT = "Map ShareGPT roles: human → user, gpt → assistant."
_ROLE_HINTS = {"human": _SHAREGPT, "gpt": _SHAREGPT,
               "function": "The legacy OpenAI `function` role is a tool result now: use role `tool`."}
_CALL_SHAPE = '{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}'
_FUNCTION_SCHEMA = '{"name": ..., "description": ..., "parameters": {...}}'
_TOOL_SHAPE = '{"type": "function", "function": ' + _FUNCTION_SCHEMA + "}"
_MISSING = object()


@dataclass(frozen=True)
class ToolCall:
    """One call an assistant message makes; ``arguments`` as given (a JSON string or an object)."""

    name: str
    arguments: str | dict
    id: str | None = None
    #: the call object as given
    raw: Mapping = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Message:
    """One checked message: its text flattened, its calls, reasoning and tool-result fields."""

    index: int
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    tool_call_id: str | None = None
    #: the tool's name, on a tool result that gives it
    name: str | None = None
    #: the message as given
    raw: Mapping = field(default_factory=dict, compare=False, repr=False)


class MessageError(TemplateForgeError, ValueError):
    """One problem in a conversation: ``reason`` (a :data:`REASONS` key), ``message_index``
    (None when no one message is at fault) and a message saying what was found and how to fix it."""

    def __init__(self, reason: str, message: str, message_index: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message_index = message_index

    def __reduce__(self):  # picklable, so it can cross from a worker process
        return type(self), (self.reason, str(self), self.message_index)


_new = object.__new__


def check_messages(messages: Any) -> list[Message]:
    """Check a conversation; one :class:`Message` per message, or :class:`MessageError`.

    Examples:
        >>> check_messages([{"role": "system", "content": "Be brief."}])
        [Message(index=0, role='system', content='Be brief.', tool_calls=(), reasoning=None, tool_call_id=None, name=None)]
    """
    if type(messages) is not list:
        messages = _as_list(messages)
    out: list[Message] = []
    ids: dict[str, tuple[int, int]] = {}  # call id -> (message index, call index)
    for i, msg in enumerate(messages):
        # A plain message is most of every dataset: checked and built with as little work as
        # possible (a frozen dataclass's __init__ alone would cost 0.7 µs). The fields not set
        # here read their class defaults, so every field but `raw` must keep a plain default.
        if type(msg) is dict:
            content = msg.get("content")
            if type(content) is str and msg.get("role") in _PLAIN_ROLES and (
                    len(msg) == 2 or _AGENTIC_KEYS.isdisjoint(msg)):
                m = _new(Message)
                d = m.__dict__
                d["index"], d["role"], d["content"], d["raw"] = i, msg["role"], content, msg
                out.append(m)
                continue
        out.append(_check_message(i, msg, ids))
    return out


def _as_list(messages: Any) -> list:
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
        return list(messages)
    raise MessageError("bad_message", f"a conversation must be a list of messages, found {_a(messages)}.")


def _check_message(i: int, msg: Any, ids: dict[str, tuple[int, int]]) -> Message:
    if not isinstance(msg, Mapping):
        raise MessageError("bad_message", f"expected an object with `role` and `content`, found {_a(msg)}.", i)
    role = msg.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise _unknown_role(role, i)
    calls = _check_calls(msg, role, i, ids)
    content = _check_content(msg, role, bool(calls), i)
    reasoning = _check_reasoning(msg, role, i)
    call_id = name = None
    if role in TOOL_ROLES:
        call_id, name = _check_tool_result(msg, i, ids)
    return Message(i, role, content, calls, reasoning, call_id, name, msg)


def _unknown_role(role: Any, i: int) -> MessageError:
    hint = _ROLE_HINTS.get(role) if isinstance(role, str) else None
    if role in ("human", "gpt"):  # these map to user or assistant: name only those
        return MessageError("unknown_role", f"unknown role {shorten(role)}; expected system, user or assistant. {hint}", i)
    return MessageError("unknown_role", f"unknown role {shorten(role)}; expected one of {', '.join(ROLES)}. "
                        f"{hint or 'Rename the role, or drop the message.'}", i)


# --------------------------------------------------------------------------- content
def _check_content(msg: Mapping, role: str, has_calls: bool, i: int) -> str:
    content = msg.get("content", _MISSING)
    if content is None or content is _MISSING:
        if has_calls:
            return ""
        what = "missing" if content is _MISSING else "null"
        extra = "; an assistant message may leave it out only when it has `tool_calls`" if role == "assistant" else ""
        raise MessageError("bad_content", f"`content` must be a string, found {what}. Give the text as a "
                           f"string or a list of text parts{extra}.", i)
    return flatten_content(content, i)


def flatten_content(content: Any, index: int) -> str:
    """The text of ``content``: a string, or a list of text parts (and strings) joined with "".

    Examples:
        >>> flatten_content([{"type": "text", "text": "Hello, "}, "world"], 0)
        'Hello, world'
        >>> flatten_content([{"type": "text", "text": "See"}, {"type": "image_url", "image_url": {}}], 3)
        Traceback (most recent call last):
        ...
        template_forge.format.messages.MessageError: multimodal content is not supported yet: part 1 of this message is an image; send text parts only.
    """
    if type(content) is str:
        return content
    if not isinstance(content, (list, tuple)):
        raise MessageError("bad_content", f"`content` must be a string, found {_a(content)}. Give the text as a "
                           'string or a list of text parts ({"type": "text", "text": ...}).', index)
    texts = []
    for k, part in enumerate(content):
        if type(part) is str:
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise _bad_part(part, k, index)
    return "".join(texts)


def _bad_part(part: Any, k: int, index: int) -> MessageError:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if isinstance(kind, str) and kind in _MEDIA:  # a str: an unhashable `type` would fail the lookup
        return MessageError("multimodal", f"multimodal content is not supported yet: part {k} of this message is "
                            f"{_MEDIA[kind]}; send text parts only.", index)
    expected = 'expected a string or a text part {"type": "text", "text": "..."}'
    if not isinstance(part, Mapping):
        found = f"is {_a(part)}"
    elif kind == "text":
        found = f"has `text` {_a(part.get('text'), missing='missing')}"
    elif kind is None:
        found = "has no `type`" + (' (add "type": "text")' if "text" in part else "")
    else:
        found = f"has type {shorten(kind)}"
    return MessageError("bad_content", f"part {k} of `content` {found}; {expected}.", index)


# --------------------------------------------------------------------------- tool calls
def _check_calls(msg: Mapping, role: str, i: int, ids: dict) -> tuple[ToolCall, ...]:
    calls = msg.get("tool_calls")
    if not calls and isinstance(calls, (list, tuple, type(None))):
        return ()  # null or [] means no calls, on any role
    if role != "assistant":
        raise MessageError("bad_tool_call", f"a {role} message has `tool_calls`; only assistant messages make "
                           "tool calls. Move them to an assistant message, or drop the key.", i)
    if not isinstance(calls, (list, tuple)):
        raise MessageError("bad_tool_call", f"`tool_calls` must be a list of calls {_CALL_SHAPE}, found {_a(calls)}.", i)
    return tuple(_check_call(call, k, i, ids) for k, call in enumerate(calls))


def _check_call(call: Any, k: int, i: int, ids: dict) -> ToolCall:
    def bad(what: str) -> MessageError:
        return MessageError("bad_tool_call", f"tool call {k} {what}", i)

    if not isinstance(call, Mapping):
        raise bad(f"must be an object {_CALL_SHAPE}, found {_a(call)}.")
    if "function" not in call and "name" in call:
        raise bad(f"is flat ({', '.join(show_key(key) for key in list(call)[:5])}); write it in the OpenAI shape "
                  f"{_CALL_SHAPE}, with `name` and `arguments` inside `function`.")
    _refuse_unknown(call, _CALL_KEYS, bad)
    if call.get("type", "function") != "function":
        raise bad(f'has `type` {shorten(call["type"])}; expected "function" (or leave `type` out).')
    fn = call.get("function")
    if not isinstance(fn, Mapping):
        raise bad(f"needs a `function` object with `name` and `arguments`, found {_a(fn, missing='none')}.")
    _refuse_unknown(fn, _FUNCTION_KEYS, bad, where="`function` ")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"needs `function.name`, the tool's name as a non-empty string, found {_a(name, missing='none')}.")
    arguments = _check_arguments(fn, name, k, i)
    return ToolCall(name, arguments, _register_id(call.get("id"), k, i, ids), call)


def _refuse_unknown(obj: Mapping, known: tuple[str, ...], bad, *, where: str = "") -> None:
    unknown = [key for key in obj if key not in known]
    if unknown:
        from template_forge.yaml_lines import did_you_mean  # only errors need it (and yaml)

        allowed = ", ".join(f"`{key}`" for key in known)
        hint = did_you_mean(unknown[0], known) if len(unknown[0]) < 100 else ""
        raise bad(f"has unknown {where}key {shorten(unknown[0])}; allowed: {allowed}.{hint}")


def _check_arguments(fn: Mapping, name: str, k: int, i: int) -> str | dict:
    where = f"`function.arguments` of tool call {k} (`{name}`)"
    if "arguments" not in fn:
        raise MessageError("bad_arguments", f"{where} is missing; templates read it. Give the arguments as a JSON "
                           'object, or "{}" for a call without arguments.', i)
    arguments = fn["arguments"]
    if isinstance(arguments, Mapping):
        return arguments
    if not isinstance(arguments, str):
        raise MessageError("bad_arguments", f"{where} must be a JSON string or an object, found {_a(arguments)}.", i)
    try:
        json_text.loads(arguments, strict=False)
    except json_text.JSONProblem as exc:
        what = f"{exc.syntax} at column {exc.column}." if exc.syntax else str(exc)
        raise MessageError("bad_arguments", f"{where} is not valid JSON: {what} Write them as JSON such as "
                           """'{"city": "Paris"}' ("{}" for none), or as an object.""", i) from None
    return arguments


def _register_id(call_id: Any, k: int, i: int, ids: dict[str, tuple[int, int]]) -> str | None:
    if call_id is None:
        return None
    if not isinstance(call_id, str) or not call_id:
        raise MessageError("bad_tool_call", f"tool call {k} has `id` {_a(call_id)}; expected a non-empty string "
                           "(or leave `id` out).", i)
    if call_id in ids:
        j, first = ids[call_id]
        raise MessageError("duplicate_call_id", f"tool call id {shorten(call_id)} is used twice: by call {first} of message "
                           f"{j} and by call {k} of message {i}. Give every call its own id.", i)
    ids[call_id] = (i, k)
    return call_id


# --------------------------------------------------------------------------- results, reasoning
def _check_tool_result(msg: Mapping, i: int, ids: dict[str, tuple[int, int]]) -> tuple[str | None, str | None]:
    call_id, name = msg.get("tool_call_id"), msg.get("name")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise MessageError("bad_tool_result", f"`tool_call_id` must be the id of the call this answers, a non-empty "
                           f"string, found {_a(call_id)}. Fix it, or leave it out.", i)
    if call_id is not None and call_id not in ids:
        known = ", ".join(shorten(known) for known in list(ids)[:10]) + (", …" if len(ids) > 10 else "")
        raise MessageError("unknown_call_id", f"`tool_call_id` {shorten(call_id)} answers no tool call of an earlier "
                           f"assistant message (known ids: {known or 'none'}). Fix the id, or put the result "
                           "after the assistant message that makes the call.", i)
    if name is not None and not isinstance(name, str):
        raise MessageError("bad_tool_result", f"`name` must be the tool's name as a string, found {_a(name)}.", i)
    return call_id, name


def _check_reasoning(msg: Mapping, role: str, i: int) -> str | None:
    found = None
    for key in _REASONING_KEYS:
        value = msg.get(key)
        if value is None:
            continue
        if role != "assistant":
            raise MessageError("bad_reasoning", f"a {role} message has `{key}`; only assistant messages carry "
                               "reasoning. Drop the key, or move its text into `content`.", i)
        if not isinstance(value, str):
            raise MessageError("bad_reasoning", f"`{key}` must be a string or null, found {_a(value)}. "
                               "Flatten the reasoning to text.", i)
        if found is None:
            found = value
    return found


# --------------------------------------------------------------------------- tools
def check_tools(tools: Any) -> list[dict]:
    """The ``tools`` of ``apply_chat_template(tools=...)``, checked and returned as given.

    Each is ``{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}``
    or a bare function schema ``{"name": ..., ...}``.

    Examples:
        >>> check_tools(None), check_tools([{"name": "now"}])
        ([], [{'name': 'now'}])
        >>> check_tools([{"type": "function", "function": {"description": "x"}}])
        Traceback (most recent call last):
        ...
        template_forge.format.messages.MessageError: tool 0: `function.name` must be the tool's name, a non-empty string, found none.
    """
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise MessageError("bad_tools", f"`tools` must be a list of tool schemas, found {_a(tools)}.")
    for k, tool in enumerate(tools):
        _check_tool(tool, k)
    return list(tools)


def _check_tool(tool: Any, k: int) -> None:
    def bad(what: str) -> MessageError:
        return MessageError("bad_tools", f"tool {k}: {what}")

    if not isinstance(tool, Mapping):
        raise bad(f"expected an object {_TOOL_SHAPE}, found {_a(tool)}.")
    if tool.get("type", "function") != "function":
        raise bad(f'has `type` {shorten(tool["type"])}; only "function" tools are supported.')
    if "function" in tool:
        fn, where = tool["function"], "function."
        if not isinstance(fn, Mapping):
            raise bad(f"`function` must be an object {_FUNCTION_SCHEMA}, found {_a(fn)}.")
    elif "name" in tool:
        fn, where = tool, ""  # a bare function schema
    else:
        from template_forge.yaml_lines import did_you_mean  # only errors need it (and yaml)

        keys = ", ".join(show_key(key) for key in list(tool)[:5]) or "none"
        first = str(next(iter(tool), ""))
        hint = did_you_mean(first, ("function", "name")) if len(first) < 100 else ""
        raise bad(f"expected {_TOOL_SHAPE} or a bare schema with `name`; keys found: {keys}.{hint}")
    _check_schema(fn, where, bad)


def _check_schema(fn: Mapping, where: str, bad) -> None:
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"`{where}name` must be the tool's name, a non-empty string, found {_a(name, missing='none')}.")
    if not isinstance(fn.get("description", ""), str):
        raise bad(f"`{where}description` must be a string, found {_a(fn['description'])}.")
    if not isinstance(fn.get("parameters", {}), Mapping):
        raise bad(f"`{where}parameters` must be a JSON schema object, found {_a(fn['parameters'])}.")


# --------------------------------------------------------------------------- wording
def _kind(value: Any) -> str:
    """The JSON name of a value's type."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def _a(value: Any, *, missing: str | None = None) -> str:
    """``a JSON <kind>`` (``missing`` instead when the value is None and that is given)."""
    if value is None and missing is not None:
        return missing
    return f"a JSON {_kind(value)}"
