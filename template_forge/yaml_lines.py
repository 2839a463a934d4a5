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
import re
from typing import Any, Callable, Sequence

import yaml

from template_forge.errors import Problem, SpecError

#: Limits on a user-written YAML file (a spec, a training config). The largest built-in spec
#: is 4 KB of some 100 nodes; the limits are far above any real file and keep a hostile one
#: (an alias bomb, a megabyte of nesting) from running for minutes or exhausting the stack.
MAX_YAML_CHARS = 1_000_000
#: nodes once every alias is expanded (``*a`` counts the whole node it names, each time)
MAX_YAML_NODES = 100_000
#: mappings and lists inside each other
MAX_YAML_DEPTH = 100


class LineIndex:
    """Maps a field path (tuple of keys) to the ``file:line`` where it is written."""

    def __init__(self, label: str):
        self.label = label
        self.lines: dict[tuple, int] = {}
        self.duplicates: list[tuple[tuple, int]] = []

    def walk(self, node: yaml.Node | None, path: tuple = ()) -> None:
        """Index ``node`` and everything under it. Iterative, so that depth costs no stack; an
        aliased node is indexed at every path that names it (:func:`parse_yaml` has bounded the
        expansion and refused cycles first)."""
        stack = [(node, path)]
        while stack:
            node, path = stack.pop()
            if node is None:
                continue
            self.lines.setdefault(path, node.start_mark.line + 1)
            children = []
            if isinstance(node, yaml.MappingNode):
                seen: set = set()
                for key, value in node.value:
                    k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                    if k in seen:
                        self.duplicates.append((path + (k,), key.start_mark.line + 1))
                    seen.add(k)
                    self.lines[path + (k,)] = key.start_mark.line + 1
                    children.append((value, path + (k,)))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    self.lines[path + (i,)] = item.start_mark.line + 1
                    children.append((item, path + (i,)))
            stack.extend(reversed(children))  # depth first, in document order

    def where(self, path: tuple) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.label}:{self.lines[path[:n]]}"
        return self.label


class _Refused(yaml.MarkedYAMLError):
    """A document over a limit, or with a recursive alias: valid YAML, refused."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (the pure-Python composer, so that it can be bounded), refusing
    nesting deeper than :data:`MAX_YAML_DEPTH` and documents of more than :data:`MAX_YAML_NODES`
    written nodes while composing, before PyYAML's own recursion or the parser's time run away."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1
        mark = self.peek_event().start_mark
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(None, None, (
                f"nests mappings and lists more than {MAX_YAML_DEPTH} deep. Flatten it"), mark)
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(None, None, f"has more than {MAX_YAML_NODES} values. Is this the right file?", mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse aliases that expand past :data:`MAX_YAML_NODES` nodes (a "billion laughs" bomb
    expands exponentially) or that name a node they are inside of (a cycle). Iterative, and
    linear in the written nodes: each node's expanded size is computed once."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            open_nodes.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            if size[id(node)] > MAX_YAML_NODES:
                raise _Refused(None, None, (
                    f"expands to more than {MAX_YAML_NODES} values through aliases (`*name`); "
                    "an alias repeats the whole node it names. Write the values out, or use fewer aliases"),
                    node.start_mark)
            continue
        if id(node) in size:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _Refused(None, None, (
                    f"has a recursive alias: the node anchored at line {child.start_mark.line + 1} contains an "
                    "alias to itself, which never ends. Remove the alias"), node.start_mark)
            if id(child) not in size:
                stack.append((child, False))


def _reader_problem(exc: yaml.reader.ReaderError, text: str, label: str) -> Problem:
    """Where a character YAML refuses is (``ReaderError`` carries a position, not a line)."""
    line = text.count("\n", 0, max(exc.position, 0)) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
    return Problem(f"{label}:{line}", "", (
        f"is not valid YAML: it holds the character U+{char:04X}, which YAML does not allow (a control "
        "character, or binary data). Remove it; save the file as UTF-8 text."))


def _compose(text: str) -> tuple[Any, yaml.Node | None]:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        return loader, node
    except BaseException:
        loader.dispose()
        raise


def parse_yaml(text: str, label: str, *, error: type[Exception] = SpecError) -> tuple[Any, LineIndex]:
    """YAML text → ``(data, index)``, ``index.where(path)`` giving the ``file:line`` of a key;
    anything that cannot be read raises ``error`` (a :class:`SpecError`, or a ``ConfigError`` for
    configs), located: a syntax error, a character YAML refuses, more than
    :data:`MAX_YAML_CHARS` characters, :data:`MAX_YAML_NODES` values (aliases expanded) or
    :data:`MAX_YAML_DEPTH` levels of nesting, a recursive alias."""
    if len(text) > MAX_YAML_CHARS:
        raise error([Problem(label, "", (
            f"is {len(text)} characters long; a spec or config may have at most {MAX_YAML_CHARS}. "
            "Is this the right file?"))])
    index = LineIndex(label)
    try:
        loader, node = _compose(text)
        try:
            index.walk(node)  # before construction: merge keys (`<<`) rewrite the nodes
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        raise error([_reader_problem(exc, text, label)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = getattr(exc, "problem", None) or str(exc)
        message = f"{problem}." if isinstance(exc, _Refused) else f"is not valid YAML: {problem}. Fix the syntax."
        raise error([Problem(where, "", message)]) from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:  # e.g. an int of 5000 digits
        raise error([Problem(label, "", f"cannot be read as YAML ({type(exc).__name__}: {_short(exc)}).")]) from None
    return data, index


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


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


_TAG = re.compile(r"(dict|list|literal|tuple|set)\[.*\]|(function|constrained)-[a-z-]+(\[.*\])?", re.S)


def _field_of(loc: tuple) -> tuple:
    """The key path of an error location, without pydantic's union-branch and validator tags
    (``str``, ``dict[str,any]``, ``literal['x']``, ``function-after[...]``, …)."""
    tags = ("str", "int", "float", "bool", "none")
    # The first item is always a key the user wrote (a field, or an unknown one such as `list[`).
    return loc[:1] + tuple(p for p in loc[1:] if not (isinstance(p, str) and (p in tags or _TAG.fullmatch(p))))


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
