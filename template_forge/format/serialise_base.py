"""The shape of a named serialiser (:mod:`template_forge.format.serialisers` holds the registry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Serialiser:
    """A way to write a value, in Python and as its Jinja twin."""

    name: str
    dumps: Callable[[Any], str]
    macro: str  # defines `tf_ser_<name>(value)`, returning exactly what `dumps` returns
    doc: str = ""

    def jinja(self, expr: str) -> str:
        """The Jinja expression that writes ``expr``."""
        return f"tf_ser_{self.name}({expr})"
