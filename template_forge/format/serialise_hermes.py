"""Hermes 3's tool entries: JSON-ish objects whose description is a Python-typed signature.

A pair held equal by tests: the Python half for the renderer, the Jinja macro for the compiled
template (:mod:`template_forge.format.serialisers` registers them).
"""

from __future__ import annotations

import json
from typing import Any

from template_forge.format.serialise_base import Serialiser

#: the serialisers this module defines
SERIALISERS: list[Serialiser] = []


# --------------------------------------------------------------------------- hermes_signature
# Hermes 3's `tool_use` template writes each tool as a JSON-ish string whose description is a
# Python signature made by its `json_to_python_type` macro. The pair below reproduces that macro
# with its quirks, so the renderer and the compiled template agree with the official one:
#   * an array is `list[Union[]]` whatever its items (the macro passes `json_spec|items`, the
#     dict's (key, value) pairs, whose `.type` is undefined, and an undefined type is iterable);
#   * a missing type is `Union[]`, a type that is not a string/list/dict (null, a number) `Any`;
#   * `additionalProperties` (even false) gives `dict[str, <its type>]`;
#   * the Args lines are not separated (`        a(str): x        b(int): y`);
#   * a type string other than string/number/integer/boolean/array/object (e.g. "null", also
#     inside a union) makes the official macro recurse forever: refused, as is a tool without
#     `description` or `parameters` (the official template fails on them).
class HermesSchemaError(ValueError):
    """A tool the Hermes 3 template cannot write (the renderer turns it into a RenderError)."""


_HERMES_BASIC = {"string": "str", "number": "float", "integer": "int", "boolean": "bool"}
_UNDEFINED = object()


def _hermes_type(spec: Any) -> str:
    kind = spec.get("type", _UNDEFINED) if isinstance(spec, dict) else _UNDEFINED
    if isinstance(kind, str) and kind in _HERMES_BASIC:
        return _HERMES_BASIC[kind]
    if kind == "array":
        return "list[Union[]]"
    if kind == "object":
        return f"dict[str, {_hermes_type(spec['additionalProperties'])}]" if "additionalProperties" in spec else "dict"
    if isinstance(kind, str) and kind:
        raise HermesSchemaError(f"JSON schema type {kind!r} is not one Hermes 3's template can write (it recurses "
                                "forever on it); use string, number, integer, boolean, array or object")
    if kind is _UNDEFINED or isinstance(kind, (str, list, tuple, dict)):
        return "Union[" + ",".join(_hermes_type({"type": t}) for t in ([] if kind is _UNDEFINED else kind)) + "]"
    return "Any"


def _hermes_text(value: Any) -> str:
    """Jinja's ``trim`` of a description (undefined: empty)."""
    return "" if value is _UNDEFINED else str(value).strip()


def hermes_signature(tool: dict) -> str:
    """One tool as Hermes 3's template writes it (see the section comment)."""
    fn = tool.get("function", tool)
    name = fn["name"]
    if not isinstance(fn.get("description"), str):
        raise HermesSchemaError(f"tool `{name}` has no `description`, which Hermes 3's template writes")
    if not isinstance(fn.get("parameters"), dict):
        raise HermesSchemaError(f"tool `{name}` has no `parameters`, which Hermes 3's template reads")
    props = fn["parameters"].get("properties", {})
    if not isinstance(props, dict):
        raise HermesSchemaError(f"tool `{name}`: `parameters.properties` must be an object")
    out = ['{"type": "function", "function": {"name": "', name, '", "description": "', name, "(",
           ", ".join(f"{k}: {_hermes_type(v)}" for k, v in props.items()), ")"]
    ret = fn.get("return", _UNDEFINED)
    if ret is not _UNDEFINED:
        out.append(" -> " + _hermes_type(ret))
    out.append(" - " + fn["description"] + "\n\n")
    if props:
        out.append("    Args:\n")
    for k, v in props.items():
        described = v.get("description", _UNDEFINED) if isinstance(v, dict) else _UNDEFINED
        out.append(f"        {k}({_hermes_type(v)}): {_hermes_text(described)}")
    if isinstance(ret, dict) and "description" in ret:
        if not isinstance(ret["description"], str):
            raise HermesSchemaError(f"tool `{name}`: `return.description` must be a string")
        out.append("\n    Returns:\n        " + ret["description"])
    params = json.dumps(fn["parameters"], ensure_ascii=False) if props else "{}"
    return "".join(out) + '", "parameters": ' + params + "}"


_HERMES_MACRO = """{%- macro tf_ser_hermes_signature(tool) -%}
    {%- set fn = tool.function if tool.function is defined else tool -%}
    {%- if fn.description is not string -%}
        {{- raise_exception('tool ' ~ fn.name ~ ' has no description, which Hermes 3 writes.') -}}
    {%- endif -%}
    {%- if fn.parameters is not mapping -%}
        {{- raise_exception('tool ' ~ fn.name ~ ' has no parameters, which Hermes 3 reads.') -}}
    {%- endif -%}
    {%- set props = fn.parameters.properties if 'properties' in fn.parameters else {} -%}
    {%- if props is not mapping -%}
        {{- raise_exception('tool ' ~ fn.name ~ ': parameters.properties must be an object.') -}}
    {%- endif -%}
    {{- '{"type": "function", "function": {"name": "' ~ fn.name ~ '", "description": "' ~ fn.name ~ '(' -}}
    {%- for k, v in props | items -%}{{- (', ' if not loop.first else '') ~ k ~ ': ' ~ tf_hermes_type(v) -}}{%- endfor -%}
    {{- ')' -}}
    {%- if 'return' in fn -%}{{- ' -> ' ~ tf_hermes_type(fn['return']) -}}{%- endif -%}
    {{- ' - ' ~ fn.description ~ '\\n\\n' -}}
    {%- if props | length > 0 -%}{{- '    Args:\\n' -}}{%- endif -%}
    {%- for k, v in props | items -%}
        {%- set d = v.description if v is mapping and 'description' in v else '' -%}
        {{- '        ' ~ k ~ '(' ~ tf_hermes_type(v) ~ '): ' ~ (d | string | trim) -}}
    {%- endfor -%}
    {%- if 'return' in fn and fn['return'] is mapping and 'description' in fn['return'] -%}
        {%- if fn['return'].description is not string -%}
            {{- raise_exception('tool ' ~ fn.name ~ ': return.description must be a string.') -}}
        {%- endif -%}
        {{- '\\n    Returns:\\n        ' ~ fn['return'].description -}}
    {%- endif -%}
    {{- '", "parameters": ' ~ ((fn.parameters | tojson) if props | length > 0 else '{}') ~ '}' -}}
{%- endmacro -%}
{%- macro tf_hermes_type(s) -%}
    {%- set basic = {'string': 'str', 'number': 'float', 'integer': 'int', 'boolean': 'bool'} -%}
    {%- if s is mapping and s.type is string and basic[s.type] is defined -%}{{- basic[s.type] -}}
    {%- elif s is mapping and s.type == 'array' -%}{{- 'list[Union[]]' -}}
    {%- elif s is mapping and s.type == 'object' -%}
        {%- if 'additionalProperties' in s -%}{{- 'dict[str, ' ~ tf_hermes_type(s.additionalProperties) ~ ']' -}}
        {%- else -%}{{- 'dict' -}}{%- endif -%}
    {%- elif s is mapping and s.type is string and s.type -%}
        {{- raise_exception('JSON schema type ' ~ s.type ~ ' is not one Hermes 3 can write.') -}}
    {%- elif not (s is mapping and 'type' in s) -%}{{- 'Union[]' -}}
    {%- elif s.type is string or s.type is mapping or (s.type is iterable and s.type is not string) -%}
        {{- 'Union[' -}}
        {%- for t in s.type -%}{{- (',' if not loop.first else '') ~ tf_hermes_type({'type': t}) -}}{%- endfor -%}
        {{- ']' -}}
    {%- else -%}{{- 'Any' -}}
    {%- endif -%}
{%- endmacro -%}
"""

SERIALISERS.append(Serialiser("hermes_signature", hermes_signature, _HERMES_MACRO, doc=(
    "Hermes 3's tool entry: a JSON-ish object whose description is a Python-typed signature.")))
