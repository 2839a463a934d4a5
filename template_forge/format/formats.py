"""The built-in formats shipped in ``templates/*.yaml`` (package data of the wheel)."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from template_forge.errors import Problem, SpecError


def _templates_dir() -> Path:
    """Where the built-in YAML files are: package data in a wheel, else the source tree."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "templates"  # wheel: templates/ is mapped to template_forge/templates/
    return installed if installed.is_dir() else package.parent / "templates"  # checkout, editable install


def builtin_names() -> list[str]:
    """Names of the built-in formats, sorted.

    Examples:
        >>> "llama3" in builtin_names()
        True
    """
    return sorted(p.stem for p in _templates_dir().glob("*.yaml"))


@lru_cache(maxsize=None)
def load_builtin(name: str):
    """Load a built-in format by name (``llama3``, ``chatml``, …)."""
    from template_forge.format.spec import load_spec_text

    path = _templates_dir() / f"{name}.yaml"
    if not path.is_file():
        names = builtin_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise SpecError([Problem("", "", (
            f"`{name}` is neither a file nor a built-in format.{hint} Built-ins: {', '.join(names)}.")
        )])
    spec = load_spec_text(path.read_text(encoding="utf-8"), label=f"templates/{name}.yaml")
    return spec
