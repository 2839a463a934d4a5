"""Role strings: ``"[INST] {system}{instruction} [/INST]"`` parsed into literal pieces and
``{field}`` references (Python ``str.format`` rules: ``{{`` and ``}}`` are braces)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable, Mapping

from template_forge.yaml_lines import did_you_mean

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Piece:
    """A piece of a role template: literal ``text``, or a ``{field}`` reference."""

    text: str = ""
    field: str | None = None


@dataclass(frozen=True)
class RoleTemplate:
    """A parsed role string such as ``"[INST] {system}{instruction} [/INST]"``.

    Examples:
        >>> t = parse_role_template("<{x}>{{{instruction}}}")
        >>> [p.field or p.text for p in t.pieces]
        ['<', 'x', '>{', 'instruction', '}']
    """

    source: str
    pieces: tuple[Piece, ...]

    def around(self, name: str) -> tuple[tuple[Piece, ...], tuple[Piece, ...]]:
        """The pieces before and after the (single) ``{name}`` field."""
        i = next(k for k, p in enumerate(self.pieces) if p.field == name)
        return self.pieces[:i], self.pieces[i + 1 :]

    def fields(self) -> list[str]:
        return [p.field for p in self.pieces if p.field is not None]


def parse_role_template(text: str) -> RoleTemplate:
    """Parse a role string with Python ``str.format`` rules (``{{``/``}}`` are braces).

    Raises ValueError with a user-facing message for anything but plain ``{name}`` fields.
    """
    pieces: list[Piece] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"is not a valid format string ({exc}). Write a literal brace as `{{{{` or `}}}}`"
        ) from None
    for literal, name, spec, conversion in parsed:
        if literal and pieces and pieces[-1].field is None:  # `{{` splits literals: rejoin them
            pieces[-1] = Piece(text=pieces[-1].text + literal)
        elif literal:
            pieces.append(Piece(text=literal))
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if conversion or spec or not _IDENT.match(name):
            raise ValueError(
                f"has the field `{shown}`; only plain `{{name}}` fields are supported. "
                "Write a literal brace as `{{` or `}}`"
            )
        pieces.append(Piece(field=name))
    return RoleTemplate(source=text, pieces=tuple(pieces))


def check_role(name: str, text: str | None, allowed: set[str], required: set[str], problems, at, *,
               once: frozenset[str] = frozenset()):
    """Parse a role string, reporting (through ``at(field, message)``) a field of ``required``
    not there exactly once, of ``once`` there twice, or not in ``allowed``."""
    if text is None:
        return None
    try:
        tmpl = parse_role_template(text)
    except ValueError as exc:
        problems.append(at(name, f"{exc}. Found {text!r}."))
        return None
    fields = tmpl.fields()
    for f in sorted(required):
        if fields.count(f) != 1:
            how = "is missing" if f not in fields else f"appears {fields.count(f)} times"
            problems.append(at(name, f"must contain `{{{f}}}` exactly once, but it {how}. Found {text!r}."))
    for f in sorted(once):
        if fields.count(f) > 1:
            problems.append(at(name, f"may contain `{{{f}}}` once, but it appears {fields.count(f)} times. Found {text!r}."))
    for f in fields:
        if f in allowed:
            continue
        if f == "system" and name == "user":
            problems.append(at(name, (
                "contains `{system}` but the system text is not placed in user turns. Set "
                "`system_in_user: true` (or a `system_placement` of first_user/last_user/final_user), "
                "or remove `{system}`.")))
        else:
            problems.append(at(name, (
                f"has the unknown field `{{{f}}}`.{did_you_mean(f, sorted(allowed))} Declare it under "
                f"`variables:` with a default value, or write literal braces as `{{{{{f}}}}}`.")))
    return tmpl


def fill(pieces: Iterable[Piece], values: Mapping[str, str]) -> str:
    """The text of ``pieces`` with every field taken from ``values``."""
    return "".join(p.text if p.field is None else values[p.field] for p in pieces)
