"""Jinja source for spec text: string literals that hold any text exactly, and expressions
that join role-template pieces."""

from __future__ import annotations

from template_forge.format.roles import Piece


# --------------------------------------------------------------------------- literals and expressions
def jinja_literal(text: str) -> str:
    """A Jinja string literal whose value is exactly ``text``.

    Jinja decodes literals with ``unicode-escape`` after normalising raw newlines, so
    backslashes, quotes and control characters are escaped; printable non-ASCII
    characters stay readable.

    Examples:
        >>> jinja_literal("a'b\\n{{ c }}")
        "'a\\\\'b\\\\n{{ c }}'"
    """
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "'" + "".join(out) + "'"


def concat(exprs: list[str]) -> str:
    """Join expressions with ``~``; merge neighbouring literals; ``''`` when empty."""
    return " ~ ".join(exprs) if exprs else "''"


def pieces_expression(pieces: tuple[Piece, ...] | list[Piece], fields: dict[str, str]) -> str:
    """Jinja expression for role-template pieces; ``fields`` maps ``instruction``/``system``
    to expressions, anything else is a template variable of the same name."""
    exprs: list[str] = []
    pending = ""
    for p in pieces:
        if p.field is None:
            pending += p.text
            continue
        if pending:
            exprs.append(jinja_literal(pending))
            pending = ""
        exprs.append(fields.get(p.field, p.field))
    if pending:
        exprs.append(jinja_literal(pending))
    return concat(exprs)


def raise_(message_expr: str) -> str:
    return "{{- raise_exception(" + message_expr + ") -}}"
