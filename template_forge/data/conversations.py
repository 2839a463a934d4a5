"""Conversation files: JSONL with one ``{"messages": [...], "tools": [...]}`` per line (OpenAI
chat format, as llmforge reads ``train_path``; ``tools`` optional), validated line by line with
located errors.

Every problem is a :class:`BadLine` carrying ``file:line``, the message index where there is
one, a short ``reason`` code (for counting skipped lines) and a message that says what was
expected and how to fix it. The messages themselves are checked by
:func:`~template_forge.format.messages.check_messages` (roles, text, tool calls, tool results,
reasoning), the same check the renderer runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from template_forge.errors import DataError
from template_forge.format import json_text
from template_forge.format import messages as _messages
from template_forge.format.messages import TOOL_ROLES, MessageError, check_messages, check_tools
from template_forge.format.render_checks import alternation_break

_kind = _messages._kind
_BOM = b"\xef\xbb\xbf"

#: Reason codes, in the order checks run.
REASONS = {
    "line_too_long": "a line longer than 64 MiB",
    "invalid_utf8": "not valid UTF-8",
    **json_text.REASONS,  # invalid_json, too_deep, number_too_large, invalid_text, duplicate_key
    "not_an_object": "not a JSON object",
    "missing_messages": "no `messages` list",
    "empty_conversation": "empty conversation",
    **_messages.REASONS,  # bad_message, unknown_role, bad_content, then the tool-call checks
    "no_assistant": "no assistant turn",
    "bad_order": "roles out of order",
    "unrenderable": "the format cannot render it",
    "untokenizable": "the tokenizer fails on it",
    "too_long": "longer than --max-length",
}


#: A line is held in memory whole to be decoded; past this size it is a bad line, read in
#: pieces and never held (64 MiB of JSON is millions of tokens: no context length takes it).
MAX_LINE_BYTES = 64 << 20


@dataclass(frozen=True)
class BadLine:
    """One rejected line: where, why (a :data:`REASONS` key) and what to do."""

    path: str
    line: int
    reason: str
    message: str
    message_index: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        if self.message_index is not None:
            where += f": message {self.message_index}"
        return f"{where}: {self.message}"

    def error(self) -> DataError:
        return DataError(str(self))


def parse_line(raw: bytes, *, path: str, line: int, require_alternation: bool = False,
               need_assistant: bool = True) -> list[dict] | BadLine:
    """Decode and check one JSONL line; return its messages (the dicts as read) or a :class:`BadLine`.

    Examples:
        >>> parse_line(b'{"messages": [{"role": "user", "content": "Hi"}, '
        ...            b'{"role": "assistant", "content": "Yo"}]}', path="d.jsonl", line=1)[1]["content"]
        'Yo'
        >>> print(parse_line(b'{"messages": [{"role": "human", "content": "Hi"}]}', path="d.jsonl", line=7))
        d.jsonl:7: message 0: unknown role 'human'; expected system, user or assistant. Map ShareGPT roles: human → user, gpt → assistant.
    """
    parsed = parse_record(raw, path=path, line=line, require_alternation=require_alternation,
                          need_assistant=need_assistant)
    return parsed if isinstance(parsed, BadLine) else parsed[0]


def parse_record(raw: bytes, *, path: str, line: int, require_alternation: bool = False,
                 need_assistant: bool = True) -> tuple[list[dict], list[dict]] | BadLine:
    """:func:`parse_line` that also returns the line's ``tools`` (``[]`` when it has none).

    Examples:
        >>> messages, tools = parse_record(b'{"messages": [{"role": "user", "content": "Time?"}], '
        ...                                b'"tools": [{"name": "now"}]}', path="d.jsonl", line=1, need_assistant=False)
        >>> tools
        [{'name': 'now'}]
        >>> print(parse_record(b'{"messages": [{"role": "user", "content": "Hi"}], "tools": {}}', path="d.jsonl", line=2))
        d.jsonl:2: `tools` must be a list of tool schemas, found a JSON object.
    """
    def bad(reason: str, message: str, index: int | None = None) -> BadLine:
        return BadLine(path, line, reason, message, index)

    if raw.startswith(_BOM):
        if line != 1:
            return bad("invalid_json", "the line starts with a UTF-8 byte-order mark (allowed on line 1 only). "
                       "Remove it: strip the bytes EF BB BF at the start of the line.")
        raw = raw[len(_BOM):]  # editors on Windows start a file with one
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return bad("invalid_utf8", f"byte {exc.start} is not valid UTF-8 ({exc.reason}). Re-encode the file as UTF-8.")
    try:
        record = json_text.loads(text, raw=raw)
    except json_text.JSONProblem as exc:
        return _bad_json(exc, bad)
    if not isinstance(record, dict):
        return bad("not_an_object", f"expected a JSON object with `messages`, found a JSON {_kind(record)}.")
    messages = record.get("messages")
    if messages is None:
        keys = ", ".join(json_text.show_key(k) for k in list(record)[:5]) or "none"
        hint = " ShareGPT records (`conversations` with `from`/`value`) need converting." if "conversations" in record else ""
        return bad("missing_messages", f"no `messages` key (keys found: {keys}).{hint}")
    if not isinstance(messages, list):
        return bad("missing_messages", f"`messages` must be a list, found a JSON {_kind(messages)}.")
    if not messages:
        return bad("empty_conversation", "`messages` is empty; drop the line.")
    return _check_record(messages, record.get("tools"), bad, require_alternation=require_alternation,
                         need_assistant=need_assistant)


def _bad_json(exc: json_text.JSONProblem, bad) -> BadLine:
    """The bad line of a line :func:`~template_forge.format.json_text.loads` refuses."""
    path = exc.path
    index = path[1] if len(path) > 1 and path[0] == "messages" and isinstance(path[1], int) else None
    message = str(exc)
    if exc.column is not None:  # a syntax error, not a refused value
        message += " Each line must be one JSON object; a record split over several lines is not JSONL."
    return bad(exc.reason, message, index)


def _check_record(messages: list, tools: Any, bad, *, require_alternation: bool,
                  need_assistant: bool) -> tuple[list[dict], list[dict]] | BadLine:
    try:
        checked = check_messages(messages)
        tools = check_tools(tools)
    except MessageError as exc:
        return bad(exc.reason, str(exc), exc.message_index)
    if need_assistant and not any(m.role == "assistant" for m in checked):
        return bad("no_assistant", "no assistant message, so nothing would be trained. Drop the line, or "
                   "use policy causal_lm.")
    # Tool results sit between assistant turns; the user/assistant alternation ignores them.
    turns = [m for m in checked if m.role not in TOOL_ROLES] if require_alternation else []
    found = alternation_break(m.role for m in turns)
    if found:
        k, expected = found
        return bad("bad_order", f"expected the {expected} turn, found a {turns[k].role} message: this format "
                   "needs user/assistant turns to alternate, starting with user. Merge consecutive "
                   "messages of the same role.", turns[k].index)
    return messages, tools


def read_conversation(source: str, *, line: int | None = None) -> list:
    """One conversation's messages: a JSON file (a list of messages, or an object with
    ``messages``), ``-`` for standard input, or line ``line`` of a JSONL file (its first
    line when ``line`` is not given), checked as ``tforge tokenize`` checks it."""
    return read_record(source, line=line)[0]


def read_record(source: str, *, line: int | None = None) -> tuple[list, list[dict]]:
    """:func:`read_conversation` that also returns the conversation's ``tools`` (``[]`` when
    it has none, or when the source is a bare list of messages)."""
    if line is None and source.endswith(".jsonl"):
        line = 1
    if line is not None:
        return _read_jsonl_line(source, line)
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: cannot read the conversation ({exc}).") from None
    try:
        data = json_text.loads(text)
    except json_text.JSONProblem as exc:
        raise DataError(f"{source}:{exc.line}: {exc}" if exc.line else f"{source}: {exc}") from None
    tools: Any = None
    if isinstance(data, dict) and "messages" in data:
        data, tools = data["messages"], data.get("tools")
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a list of messages or an object with `messages`, found {type(data).__name__}.")
    try:
        return data, check_tools(tools)
    except MessageError as exc:
        raise DataError(f"{source}: {exc}") from None


def _read_jsonl_line(path: str, line: int) -> tuple[list, list[dict]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if number == line:
                parsed = parse_record(raw.rstrip(b"\r\n"), path=path, line=number, need_assistant=False)
                if isinstance(parsed, BadLine):
                    raise parsed.error()
                return parsed
    raise DataError(f"{path} has fewer than {line} lines.")


def read_lines(fh: BinaryIO, *, seen: Callable[[bytes], None] = lambda piece: None,
               limit: int = MAX_LINE_BYTES) -> Iterator[bytes | int]:
    r"""The lines of binary file ``fh``, each as its bytes, or as its size (an ``int``) when it
    is longer than ``limit`` bytes: such a line is read in pieces and never held whole.
    ``seen`` is given every byte read, in order (for a digest and progress).

    Examples:
        >>> import io
        >>> list(read_lines(io.BytesIO(b"ab\n" + b"x" * 9 + b"\ncd"), limit=4))
        [b'ab\n', 10, b'cd']
    """
    while raw := fh.readline(limit + 1):
        seen(raw)
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        size = len(raw)
        while not raw.endswith(b"\n") and (raw := fh.readline(1 << 20)):
            seen(raw)
            size += len(raw)
        yield size


def line_too_long(size: int, *, path: str, line: int) -> BadLine:
    """The :class:`BadLine` of a line :func:`read_lines` gave as its size."""
    return BadLine(path, line, "line_too_long", (
        f"the line has {size:,} bytes, more than the {MAX_LINE_BYTES >> 20} MiB a conversation may take. "
        "Split the conversation, or drop the line with --on-error skip."))
