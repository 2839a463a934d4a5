"""Named serialisers: the ways templates write a tool definition or a call's arguments when
it is not JSON (``tojson``).

Most templates write a tool definition as ``tool | tojson`` (with their own indent and
separators: the ``json`` options of a spec), but some write their own text: Python-typed
signatures (Hermes), a TypeScript-like namespace (gpt-oss), Mistral's key-by-key JSON. Each
serialiser here is a pair that must agree byte for byte: ``dumps`` (Python, for the
renderer) and ``macro`` (Jinja source of a macro ``tf_ser_<name>(value)``, for the compiled
template). A spec names one with ``tools.serialise`` or ``tool_calls.serialise``; the
property tests hold each pair equal on generated values.

Each family's pairs live in their own module (``serialise_<family>.py``, a list
``SERIALISERS``); this one registers them at import (the registry is closed: a spec can only
name what is here).
"""

from __future__ import annotations

from template_forge.format import serialise_gemma4, serialise_harmony, serialise_hermes, serialise_mistral
from template_forge.format.serialise_base import Serialiser

__all__ = ["SERIALISERS", "Serialiser", "names", "register"]

SERIALISERS: dict[str, Serialiser] = {}


def register(serialiser: Serialiser) -> Serialiser:
    if not serialiser.macro.lstrip("{%- ").startswith(f"macro tf_ser_{serialiser.name}("):
        raise ValueError(f"the macro of serialiser {serialiser.name!r} must define tf_ser_{serialiser.name}(value)")
    SERIALISERS[serialiser.name] = serialiser
    return serialiser


def names() -> list[str]:
    return ["json", *sorted(SERIALISERS)]


for _module in (serialise_harmony, serialise_gemma4, serialise_hermes, serialise_mistral):
    for _serialiser in _module.SERIALISERS:
        register(_serialiser)
