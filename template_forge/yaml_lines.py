"""User-written YAML (prompt-format specs, training configs), read so that every problem can
say where it is.

:func:`parse_yaml` returns the data and a :class:`LineIndex` that maps a key path to its
``file:line``; :func:`pydantic_problems` turns a pydantic ``ValidationError`` into located
:class:`~template_forge.errors.Problem` s, one per field, with what was expected and what was
found; :func:`did_you_mean` suggests the closest known name for a misspelt one.

Examples:
    >>> data, index = parse_yaml("model_id: m\\nlora_config:\\n  r: 8\\n", "c.yaml")
    >>> index.where(("lora_config", "r")), index.where(("absent",))
    ('c.yaml:3', 'c.yaml:1')
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

import yaml

from template_forge.errors import Problem, SpecError


class LineIndex:
    """Maps a field path (tuple of keys) to the ``file:line`` where it is written."""

    def __init__(self, label: str):
        self.label = label
        self.lines: dict[tuple, int] = {}
        self.duplicates: list[tuple[tuple, int]] = []

    def walk(self, node: yaml.Node | None, path: tuple = ()) -> None:
        if node is not None:
            self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key, value in node.value:
                k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                if k in seen:
                    self.duplicates.append((path + (k,), key.start_mark.line + 1))
                seen.add(k)
                self.lines[path + (k,)] = key.start_mark.line + 1
                self.walk(value, path + (k,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.walk(item, path + (i,))

    def where(self, path: tuple) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.label}:{self.lines[path[:n]]}"
        return self.label


def parse_yaml(text: str, label: str, *, error: type[Exception] = SpecError) -> tuple[Any, LineIndex]:
    """YAML text → ``(data, index)``, ``index.where(path)`` giving the ``file:line`` of a key;
    a syntax error raises ``error`` (a :class:`SpecError`, or a ``ConfigError`` for configs)."""
    index = LineIndex(label)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = getattr(exc, "problem", None) or str(exc)
        raise error([Problem(where, "", f"is not valid YAML: {problem}. Fix the syntax.")]) from None
    except (RecursionError, ValueError, TypeError) as exc:  # pathological inputs
        raise error([Problem(label, "", f"cannot be read as YAML ({type(exc).__name__}).")]) from None
    index.walk(node)
    return data, index


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` Did you mean `x`?`` for the closest candidate, or ``""``.

    Examples:
        >>> did_you_mean("lerning_rate", ["learning_rate", "seed"])
        ' Did you mean `learning_rate`?'
    """
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""


def describe(value: Any) -> str:
    """A value as a message shows it: its YAML-ish type and a short repr.

    Examples:
        >>> describe(3), describe("x" * 80)[:12]
        ('int 3', "str 'xxxxxxx")
    """
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


#: What a value of a failed pydantic type check should have been, in a user's words.
_EXPECTED = {
    "string_type": "a string (quote it in YAML)",
    "bool_type": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def pydantic_problems(exc, *, where: Callable[[tuple], str], base: tuple = (),
                      known: Callable[[tuple], Sequence[str]] = lambda loc: (),
                      missing: Callable[[tuple], str] = lambda loc: "is required but missing. Add it.") -> list[Problem]:
    """One located :class:`Problem` per field that failed validation.

    A value that fits no branch of a union (``str | dict``) fails once per branch; those
    failures become one problem listing every branch.

    Args:
        exc: the ``pydantic.ValidationError``.
        where: ``file:line`` of a full key path (``base`` + the error's location).
        base: where the validated mapping sits in the document.
        known: the field names allowed at a location, for unknown-field messages.
        missing: the message for a required field that is absent (what to add).

    Examples:
        >>> from pydantic import BaseModel, ConfigDict, ValidationError
        >>> class M(BaseModel):
        ...     model_config = ConfigDict(extra="forbid", strict=True)
        ...     seed: int
        ...     name: str | dict = ""
        >>> try:
        ...     M.model_validate({"sed": 1, "name": 3})
        ... except ValidationError as exc:
        ...     for p in pydantic_problems(exc, where=lambda path: "c.yaml", known=lambda loc: ("seed", "name")):
        ...         print(p)
        c.yaml, `seed`: is required but missing. Add it.
        c.yaml, `name`: expected a string (quote it in YAML) or a mapping, found int 3.
        c.yaml, `sed`: unknown field. Did you mean `seed`? Known fields: seed, name.
    """
    grouped: dict[tuple, list[dict]] = {}
    for err in exc.errors():
        grouped.setdefault(_field_of(err["loc"]), []).append(err)
    problems = []
    for loc, errors in grouped.items():
        path = base + loc
        problems.append(Problem(where(path), ".".join(str(p) for p in path), _message(loc, errors, known, missing)))
    return problems


def _field_of(loc: tuple) -> tuple:
    """The key path of an error location, without pydantic's union-branch and validator tags
    (``str``, ``dict[str,any]``, ``literal['x']``, ``function-after[...]``, …)."""
    tags = ("str", "int", "float", "bool", "none")
    return tuple(p for p in loc if not (isinstance(p, str) and (
        p in tags or p.startswith(("dict[", "list[", "literal[", "function-", "constrained-")))))


def _message(loc: tuple, errors: list[dict], known, missing) -> str:
    kinds = [e["type"] for e in errors]
    if "extra_forbidden" in kinds:
        options = tuple(known(loc))
        listed = f" Known fields: {', '.join(options)}." if options else ""
        return f"unknown field.{did_you_mean(loc[-1], options)}{listed}"
    if "missing" in kinds:
        return missing(loc)
    found = describe(errors[0].get("input"))
    expected = [_EXPECTED.get(e["type"]) or e["msg"].replace("Input should be ", "") for e in errors]
    if len(errors) == 1 and errors[0]["type"] not in _EXPECTED and errors[0]["type"] != "literal_error":
        return f"{errors[0]['msg']}, found {found}."
    return f"expected {' or '.join(dict.fromkeys(expected))}, found {found}."
