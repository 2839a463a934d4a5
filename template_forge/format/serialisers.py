"""Named serialisers: the ways templates write a tool definition or a call's arguments when
it is not JSON (``tojson``).

Most templates write a tool definition as ``tool | tojson`` (with their own indent and
separators: the ``json`` options of a spec), but some write their own text: Python-typed
signatures (Hermes), a TypeScript-like namespace (gpt-oss), Mistral's key-by-key JSON. Each
serialiser here is a pair that must agree byte for byte: ``dumps`` (Python, for the
renderer) and ``macro`` (Jinja source of a macro ``tf_ser_<name>(value)``, for the compiled
template). A spec names one with ``tools.serialise`` or ``tool_calls.serialise``; the
property tests hold each pair equal on generated values.

Register a serialiser with :func:`register` at import time of this module (the registry is
closed: a spec can only name what is here).
"""

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


SERIALISERS: dict[str, Serialiser] = {}


def register(serialiser: Serialiser) -> Serialiser:
    if not serialiser.macro.lstrip("{%- ").startswith(f"macro tf_ser_{serialiser.name}("):
        raise ValueError(f"the macro of serialiser {serialiser.name!r} must define tf_ser_{serialiser.name}(value)")
    SERIALISERS[serialiser.name] = serialiser
    return serialiser


def names() -> list[str]:
    return ["json", *sorted(SERIALISERS)]


# --------------------------------------------------------------------------- mistral_tool
# Mistral v0.3 / Nemo write each tool key by key: `{"type": "function", "function": {...}}`
# with the function's keys in their order (`return` left out), a string value *unescaped*
# between quotes (`"description": "say "hi""`), any other value as `tojson`. The type is
# always "function", whatever the tool's `type`.
def _mistral_tool(tool) -> str:
    import json

    def field(key, val) -> str:
        return f'"{key}": "{val}"' if isinstance(val, str) else f'"{key}": ' + json.dumps(val, ensure_ascii=False)

    fn = tool["function"]
    return '{"type": "function", "function": {' + ", ".join(field(k, v) for k, v in fn.items() if k != "return") + "}}"


register(Serialiser(
    name="mistral_tool",
    dumps=_mistral_tool,
    macro="""{%- macro tf_ser_mistral_tool(tool) -%}
    {{- '{"type": "function", "function": {' -}}
    {%- for key, val in tool.function | items if key != 'return' -%}
        {%- if val is string -%}
            {{- '"' ~ key ~ '": "' ~ val ~ '"' -}}
        {%- else -%}
            {{- '"' ~ key ~ '": ' ~ (val | tojson) -}}
        {%- endif -%}
        {{- ', ' if not loop.last else '' -}}
    {%- endfor -%}
    {{- '}}' -}}
{%- endmacro -%}
""",
    doc="Mistral v0.3 / Nemo: each function key by key, strings unescaped, other values as JSON.",
))
