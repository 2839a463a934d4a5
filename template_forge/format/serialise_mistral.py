"""Mistral v0.3 / Nemo tool definitions, written key by key as their templates write them.

A pair held equal by tests: the Python half for the renderer, the Jinja macro for the compiled
template (:mod:`template_forge.format.serialisers` registers them).
"""

from __future__ import annotations

import json

from template_forge.format.serialise_base import Serialiser

#: the serialisers this module defines
SERIALISERS: list[Serialiser] = []


# --------------------------------------------------------------------------- mistral_tool
# Mistral v0.3 / Nemo write each tool key by key: `{"type": "function", "function": {...}}`
# with the function's keys in their order (`return` left out), a string value *unescaped*
# between quotes (`"description": "say "hi""`), any other value as `tojson`. The type is
# always "function", whatever the tool's `type`.
def _mistral_tool(tool) -> str:

    def field(key, val) -> str:
        return f'"{key}": "{val}"' if isinstance(val, str) else f'"{key}": ' + json.dumps(val, ensure_ascii=False)

    fn = tool["function"]
    return '{"type": "function", "function": {' + ", ".join(field(k, v) for k, v in fn.items() if k != "return") + "}}"


SERIALISERS.append(Serialiser(
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
