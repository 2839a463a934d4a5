"""The built-in formats: ``templates/*.yaml``, shipped in the wheel as package data.

Only the lookup lives here (names, files, a did-you-mean for a misspelt name); reading a
file into a :class:`~template_forge.format.spec.Spec` is :func:`~template_forge.format.spec.load_builtin`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from template_forge.errors import Problem, SpecError


def templates_dir() -> Path:
    """Where the built-in YAML files are.

    The wheel ships the top-level ``templates/`` folder as ``template_forge/templates/``
    (the mapping is in ``pyproject.toml``); a checkout, installed editable or on
    ``PYTHONPATH``, reads ``templates/`` beside ``template_forge/``.
    """
    package = Path(__file__).resolve().parents[1]
    shipped = package / "templates"
    return shipped if shipped.is_dir() else package.parent / "templates"


def builtin_names() -> list[str]:
    """Names of the built-in formats, sorted.

    Examples:
        >>> "llama3" in builtin_names()
        True
    """
    return sorted(p.stem for p in templates_dir().glob("*.yaml"))


def builtin_file(name: str) -> Path:
    """The YAML file of the built-in format ``name``; a located error for an unknown name.

    Examples:
        >>> builtin_file("llama3").name
        'llama3.yaml'
    """
    path = templates_dir() / f"{name}.yaml"
    if not path.is_file():
        names = builtin_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise SpecError([Problem("", "", (
            f"`{name}` is neither a file nor a built-in format.{hint} Built-ins: {', '.join(names)}.")
        )])
    return path
