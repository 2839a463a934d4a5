"""Gemma 4's tool declarations and call arguments, in Gemma's own syntax.

A pair held equal by tests: the Python half for the renderer, the Jinja macro for the compiled
template (:mod:`template_forge.format.serialisers` registers them).
"""

from __future__ import annotations

from collections.abc import Mapping

from template_forge.format.serialise_base import Serialiser

#: the serialisers this module defines
SERIALISERS: list[Serialiser] = []


# --------------------------------------------------------------------------- Gemma 4
# Gemma 4 writes values in its own syntax: strings between `<|"|>` quotes (never escaped),
# booleans as true/false, mapping keys sorted case-insensitively (Jinja's `dictsort`),
# anything else as Jinja prints it (None → "None"). Tool declarations are
# `declaration:NAME{description:…,parameters:{properties:{…},required:[…],type:…}}`, with the
# official template's quirks kept: property names that are schema keywords are skipped, an
# object property without `properties` lists its own keys, parameters without a `type` lose
# their closing brace.
_G4Q = '<|"|>'
_G4_STANDARD = ("description", "type", "properties", "required", "nullable")


def _g4_sorted(mapping):
    return sorted(mapping.items(), key=lambda kv: kv[0].lower() if isinstance(kv[0], str) else kv[0])


def _g4_value(value, escape_keys: bool = True) -> str:
    """Gemma 4's ``format_argument``.

    Examples:
        >>> _g4_value({"b": [1, None, True], "A": "x"})
        '{<|"|>A<|"|>:<|"|>x<|"|>,<|"|>b<|"|>:[1,None,true]}'
    """
    if isinstance(value, str):
        return _G4Q + value + _G4Q
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ",".join((_G4Q + str(k) + _G4Q if escape_keys else str(k)) + ":" + _g4_value(v, escape_keys)
                              for k, v in _g4_sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_g4_value(v, escape_keys) for v in value) + "]"
    return str(value)


def _g4_upper(mapping, key) -> str:
    """``value[key] | upper`` (missing: the empty string)."""
    return str(mapping[key]).upper() if key in mapping else ""


def _g4_required(items) -> str:
    return "required:[" + ",".join(_G4Q + str(x) + _G4Q for x in items) + "]"


def _g4_items(items: Mapping) -> str:
    out = []
    for key, value in _g4_sorted(items):
        if value is None:
            continue
        if key == "properties":
            out.append("properties:{" + (_g4_params(value) if isinstance(value, Mapping) else "") + "}")
        elif key == "required":
            out.append(_g4_required(value))
        elif key == "type":
            out.append("type:" + _g4_value(value.upper() if isinstance(value, str) else [str(v).upper() for v in value]))
        else:
            out.append(f"{key}:{_g4_value(value)}")
    return "items:{" + ",".join(out) + "}"


def _g4_property(value: Mapping) -> str:
    parts = []
    if value.get("description"):
        parts.append(f"description:{_G4Q}{value['description']}{_G4Q}")
    kind = _g4_upper(value, "type")
    if kind == "STRING" and value.get("enum"):
        parts.append("enum:" + _g4_value(value["enum"]))
    elif kind == "ARRAY" and isinstance(value.get("items"), Mapping) and value["items"]:
        parts.append(_g4_items(value["items"]))
    if value.get("nullable"):
        parts.append("nullable:true")
    if kind == "OBJECT":
        inner = value["properties"] if isinstance(value.get("properties"), Mapping) else value
        parts.append("properties:{" + _g4_params(inner) + "}")
        if value.get("required"):
            parts.append(_g4_required(value["required"]))
    parts.append(f"type:{_G4Q}{kind}{_G4Q}")
    return "{" + ",".join(parts) + "}"


def _g4_params(properties: Mapping) -> str:
    """Gemma 4's ``format_parameters``: every property but those named like schema keywords."""
    return ",".join(f"{key}:{_g4_property(value)}" for key, value in _g4_sorted(properties)
                    if key not in _G4_STANDARD)


def _g4_declaration(tool: Mapping) -> str:
    fn = tool["function"]
    out = f"declaration:{fn['name']}{{description:{_G4Q}{fn.get('description', '')}{_G4Q}"
    params = fn.get("parameters")
    if params:
        out += ",parameters:{"
        if params.get("properties"):
            out += "properties:{" + _g4_params(params["properties"]) + "},"
        if params.get("required"):
            out += _g4_required(params["required"]) + ","
        if params.get("type"):
            out += f"type:{_G4Q}{str(params['type']).upper()}{_G4Q}}}"
    if "response" in fn:
        response = fn["response"]
        out += ",response:{"
        if response.get("description"):
            out += f"description:{_G4Q}{response['description']}{_G4Q},"
        if _g4_upper(response, "type") == "OBJECT":
            out += f"type:{_G4Q}OBJECT{_G4Q}}}"
    return (out + "}").strip()


def _g4_arguments(arguments) -> str:
    """A call's arguments: ``key:value`` pairs, keys as written (a string is written as given)."""
    if not isinstance(arguments, Mapping):
        return ""
    return ",".join(f"{k}:{_g4_value(v, False)}" for k, v in _g4_sorted(arguments))


_G4_VALUE_MACRO = """
{%- macro tf_g4_value(value, escape_keys=true) -%}
    {%- if value is string -%}{{- '<|"|>' ~ value ~ '<|"|>' -}}
    {%- elif value is boolean -%}{{- 'true' if value else 'false' -}}
    {%- elif value is mapping -%}{{- '{' -}}
        {%- for k, v in value | dictsort -%}
            {{- (',' if not loop.first else '') ~ (('<|"|>' ~ k ~ '<|"|>') if escape_keys else k) ~ ':' -}}
            {{- tf_g4_value(v, escape_keys) -}}
        {%- endfor -%}{{- '}' -}}
    {%- elif value is sequence -%}{{- '[' -}}
        {%- for v in value -%}{{- (',' if not loop.first else '') ~ tf_g4_value(v, escape_keys) -}}{%- endfor -%}
        {{- ']' -}}
    {%- else -%}{{- value -}}
    {%- endif -%}
{%- endmacro -%}
"""

_G4_DECLARATION_MACRO = """
{%- macro tf_ser_gemma4_declaration(tool) -%}
    {%- set fn = tool['function'] -%}
    {%- set tf_out = namespace(text='declaration:' ~ fn['name'] ~ '{description:<|"|>' ~ fn['description'] ~ '<|"|>') -%}
    {%- set params = fn['parameters'] -%}
    {%- if params -%}
        {%- set tf_out.text = tf_out.text ~ ',parameters:{' -%}
        {%- if params['properties'] -%}
            {%- set tf_out.text = tf_out.text ~ 'properties:{' ~ tf_g4_params(params['properties']) ~ '},' -%}
        {%- endif -%}
        {%- if params['required'] -%}{%- set tf_out.text = tf_out.text ~ tf_g4_required(params['required']) ~ ',' -%}
        {%- endif -%}
        {%- if params['type'] -%}
            {%- set tf_out.text = tf_out.text ~ 'type:<|"|>' ~ (params['type'] | upper) ~ '<|"|>}' -%}
        {%- endif -%}
    {%- endif -%}
    {%- if 'response' in fn -%}
        {%- set response = fn['response'] -%}
        {%- set tf_out.text = tf_out.text ~ ',response:{' -%}
        {%- if response['description'] -%}
            {%- set tf_out.text = tf_out.text ~ 'description:<|"|>' ~ response['description'] ~ '<|"|>,' -%}
        {%- endif -%}
        {%- if response['type'] | upper == 'OBJECT' -%}{%- set tf_out.text = tf_out.text ~ 'type:<|"|>OBJECT<|"|>}' -%}
        {%- endif -%}
    {%- endif -%}
    {{- (tf_out.text ~ '}') | trim -}}
{%- endmacro -%}
{%- macro tf_g4_required(items) -%}
    {{- 'required:[' -}}{%- for x in items -%}{{- (',' if not loop.first else '') ~ '<|"|>' ~ x ~ '<|"|>' -}}{%- endfor -%}
    {{- ']' -}}
{%- endmacro -%}
{%- macro tf_g4_params(properties) -%}
    {%- set tf_first = namespace(done=false) -%}
    {%- for key, value in properties | dictsort -%}
        {%- if key not in ['description', 'type', 'properties', 'required', 'nullable'] -%}
            {{- ',' if tf_first.done else '' -}}{%- set tf_first.done = true -%}
            {{- key ~ ':' ~ tf_g4_property(value) -}}
        {%- endif -%}
    {%- endfor -%}
{%- endmacro -%}
{%- macro tf_g4_property(value) -%}
    {%- set parts = [] -%}
    {%- set kind = value['type'] | upper -%}
    {%- if value['description'] -%}{%- set parts = parts + ['description:<|"|>' ~ value['description'] ~ '<|"|>'] -%}
    {%- endif -%}
    {%- if kind == 'STRING' -%}
        {%- if value['enum'] -%}{%- set parts = parts + ['enum:' ~ tf_g4_value(value['enum'])] -%}{%- endif -%}
    {%- elif kind == 'ARRAY' -%}
        {%- if value['items'] is mapping and value['items'] -%}
            {%- set parts = parts + [tf_g4_items(value['items'])] -%}
        {%- endif -%}
    {%- endif -%}
    {%- if value['nullable'] -%}{%- set parts = parts + ['nullable:true'] -%}{%- endif -%}
    {%- if kind == 'OBJECT' -%}
        {%- set inner = value['properties'] if value['properties'] is defined and value['properties'] is mapping
            else value -%}
        {%- set parts = parts + ['properties:{' ~ tf_g4_params(inner) ~ '}'] -%}
        {%- if value['required'] -%}{%- set parts = parts + [tf_g4_required(value['required'])] -%}{%- endif -%}
    {%- endif -%}
    {{- '{' ~ ((parts + ['type:<|"|>' ~ kind ~ '<|"|>']) | join(',')) ~ '}' -}}
{%- endmacro -%}
{%- macro tf_g4_items(items) -%}
    {%- set tf_items = namespace(parts=[]) -%}
    {%- for key, value in items | dictsort -%}
        {%- if value is not none -%}
            {%- if key == 'properties' -%}
                {%- set tf_items.parts = tf_items.parts + ['properties:{' ~ (tf_g4_params(value) if value is mapping else '') ~ '}'] -%}
            {%- elif key == 'required' -%}{%- set tf_items.parts = tf_items.parts + [tf_g4_required(value)] -%}
            {%- elif key == 'type' -%}
                {%- set tf_items.parts = tf_items.parts + ['type:' ~ tf_g4_value(value | upper if value is string
                    else value | map('upper') | list)] -%}
            {%- else -%}{%- set tf_items.parts = tf_items.parts + [key ~ ':' ~ tf_g4_value(value)] -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {{- 'items:{' ~ (tf_items.parts | join(',')) ~ '}' -}}
{%- endmacro -%}
""" + _G4_VALUE_MACRO

_G4_ARGUMENTS_MACRO = """
{%- macro tf_ser_gemma4_arguments(arguments) -%}
    {%- if arguments is mapping -%}
        {%- for k, v in arguments | dictsort -%}
            {{- (',' if not loop.first else '') ~ k ~ ':' ~ tf_g4_value(v, false) -}}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
""" + _G4_VALUE_MACRO

SERIALISERS.append(Serialiser("gemma4_declaration", _g4_declaration, _G4_DECLARATION_MACRO.strip(),
                    "Gemma 4's `declaration:NAME{…}` tool declarations"))
SERIALISERS.append(Serialiser("gemma4_arguments", _g4_arguments, _G4_ARGUMENTS_MACRO.strip(),
                    "Gemma 4's `key:value` call arguments"))
