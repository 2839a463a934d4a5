"""Strict, bounded JSON decoding of untrusted text: conversation lines and tool-call arguments.

:func:`json.loads` accepts more than JSON and fails in ways a caller cannot locate: it reads
``NaN`` and ``Infinity``, turns ``1e999`` into ``inf``, keeps the last of two equal keys,
raises :class:`RecursionError` on deep nesting and :class:`ValueError` on integers of more
than 4,300 digits, and hands back lone UTF-16 surrogates (``"\\ud800"``) that no encoder can
turn into UTF-8. :func:`loads` reads RFC 8259 JSON only, with these limits:

* nesting at most :data:`MAX_DEPTH` arrays/objects deep (the renderer and ``json.dumps``
  recurse over tool arguments and schemas; Python's own limit is ~1,000 frames);
* integers of at most 4,300 digits (Python's ``int`` limit), floats within float range;
* every string and key valid Unicode text: no lone surrogate;
* no duplicate key in an object (parsers disagree on which one wins).

Every refusal is a :class:`JSONProblem` with a reason code and a message saying what was
found and how to fix it; nothing else escapes.

The checks cost little on ordinary lines: depth is only walked when the text holds more
opening brackets than the limit, and strings are only searched for surrogates when the raw
text holds a ``\\uD8..``–``\\uDF..`` escape (valid UTF-8 cannot carry a surrogate otherwise).

Examples:
    >>> loads('{"a": [1, 2.5, "x"]}')
    {'a': [1, 2.5, 'x']}
    >>> try:
    ...     loads('{"a": "\\\\ud800"}')
    ... except JSONProblem as exc:
    ...     print(exc.reason, exc)
    invalid_text `a` holds a lone UTF-16 surrogate '\\ud800', which is not text. Fix the program that wrote the file (it split an emoji or other non-BMP character in two).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

#: How deep arrays and objects may nest (a real tool schema rarely passes 20).
MAX_DEPTH = 100

REASONS = {
    "invalid_json": "not valid JSON",
    "too_deep": "nested too deeply",
    "number_too_large": "a number too large",
    "invalid_text": "a lone surrogate, not text",
    "duplicate_key": "a key given twice",
}

#: A ``\\u`` escape of a UTF-16 surrogate (a pair decodes to one character, a lone one stays).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONProblem(ValueError):
    """Text refused by :func:`loads`: ``reason`` (a :data:`REASONS` key), ``column`` where known,
    ``path`` (``messages[2].content``) where known, and a message that says how to fix it."""

    def __init__(self, reason: str, message: str, *, column: int | None = None, path: tuple = (),
                 syntax: str = "", line: int | None = None):
        super().__init__(message)
        #: the line of a syntax error, for text of several lines (a conversation file)
        self.line = line
        #: the decoder's own words for a syntax error ("Expecting value")
        self.syntax = syntax
        self.reason = reason
        self.column = column
        self.path = path


class _Refused(ValueError):
    """Raised from inside the decoder's hooks; turned into a :class:`JSONProblem`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _constant(name: str) -> Any:
    raise _Refused("invalid_json", f"`{name}` is not JSON (JSON has no NaN or infinity). Write null, or the "
                   "number as a string.")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused("number_too_large", f"the number {shorten(text, 30)} is beyond the range of a float. "
                       "Write it as a string.")
    return value


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused("duplicate_key", f"key {shorten(key)} appears twice in one object; JSON readers disagree "
                       "on which value wins. Keep one of them.")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=_float, parse_constant=_constant)
_LENIENT = json.JSONDecoder()


def loads(text: str, *, raw: bytes | None = None, strict: bool = True) -> Any:
    """Decode one JSON value from ``text``, or raise :class:`JSONProblem` (see the module docs).

    ``raw`` is ``text`` as strict UTF-8 when the caller has it (so it holds no surrogate): the
    limits' quick scans read bytes several times faster than text with non-ASCII characters. ``strict=False`` reads
    what Python's ``json`` reads (NaN, Infinity, a repeated key): for text that is kept as it
    is and only read again by Python, such as tool-call ``arguments``; the limits still apply.

    Examples:
        >>> loads('[{"k": 1}]')
        [{'k': 1}]
        >>> try:
        ...     loads('{"k": NaN}')
        ... except JSONProblem as exc:
        ...     print(exc.reason, exc.column)
        invalid_json None
    """
    try:
        value = (_DECODER if strict else _LENIENT).decode(text)
    except json.JSONDecodeError as exc:
        raise JSONProblem("invalid_json", f"invalid JSON at column {exc.colno}: {exc.msg}.", column=exc.colno,
                          syntax=exc.msg, line=exc.lineno) from None
    except _Refused as exc:
        raise JSONProblem(exc.reason, str(exc)) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise JSONProblem("number_too_large", f"an integer has more than {sys.get_int_max_str_digits()} digits. "
                          "Write it as a string.") from None
    # Text that came from strict UTF-8 holds no surrogate itself; other text may.
    raw_surrogate = raw is None and _SURROGATE.search(text) is not None
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
        raise _too_deep()
    if raw_surrogate or _SURROGATE_ESCAPE.search(raw):
        found = find_surrogate(value)
        if found is not None:
            path, char = found
            raise JSONProblem("invalid_text", f"{show_path(path)} holds a lone UTF-16 surrogate {char!r}, which is "
                              "not text. Fix the program that wrote the file (it split an emoji or other non-BMP "
                              "character in two).", path=path)
    return value


def _too_deep() -> JSONProblem:
    return JSONProblem("too_deep", f"arrays and objects nest more than {MAX_DEPTH} deep. Flatten the data, or "
                       "pass deep structures as a JSON string.")


def _depth_over(value: Any, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)] if type(value) in (dict, list) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) in (dict, list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def find_surrogate(value: Any) -> tuple[tuple, str] | None:
    """The path and character of the first lone surrogate in ``value``'s strings and keys.

    Examples:
        >>> find_surrogate({"messages": [{"content": "ok"}, {"content": "a\\udc00"}]})
        (('messages', 1, 'content'), '\\udc00')
    """
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if type(node) is str:
            m = _SURROGATE.search(node)
            if m:
                return path, m.group()
        elif type(node) is dict:
            for key, child in reversed(node.items()):
                m = _SURROGATE.search(key)
                if m:
                    return path + (key,), m.group()
                stack.append((child, path + (key,)))
        elif type(node) is list:
            stack.extend((child, path + (k,)) for k, child in reversed(list(enumerate(node))))
    return None


def show_path(path: tuple) -> str:
    """``messages[2].content`` for ``("messages", 2, "content")``, in backquotes.

    Examples:
        >>> show_path(("messages", 2, "content")), show_path(())
        ('`messages[2].content`', 'a string')
    """
    if not path:
        return "a string"
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"`{shorten(out, 80, quote=False)}`"


def show_key(key: Any) -> str:
    """A key as a message names it: in backquotes, escaped and shortened.

    Examples:
        >>> show_key("functoin")
        '`functoin`'
    """
    return f"`{shorten(key, 60, quote=False)}`"


def shorten(value: Any, limit: int = 40, *, quote: bool = True) -> str:
    """A value as an error message may show it: its repr (control characters, surrogates and
    bidi overrides escaped), cut to about ``limit`` characters.

    Examples:
        >>> shorten("x" * 100, 10)
        "'xxxxxxxx…' (100 characters)"
        >>> shorten("\\x1b[2J")
        "'\\\\x1b[2J'"
    """
    text = repr(value) if quote else ascii_safe(str(value))
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[: limit - 1] + "…" + ("'" if quote and isinstance(value, str) else "") + size


def ascii_safe(text: str) -> str:
    """``text`` with every non-printable character (controls, surrogates, bidi marks) escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
