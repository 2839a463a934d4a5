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

import json
from collections.abc import Mapping
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


# --------------------------------------------------------------------------- harmony_typescript (gpt-oss)
# One tool as gpt-oss's template writes it inside `namespace functions { ... }`: a comment with
# the description, then `type name = (_: {...}) => any;` with each parameter's TypeScript-like
# type. The layout quirks are the official template's whitespace, reproduced: a nested
# object's property types follow "\n" and 16 spaces, a oneOf variant's default 20 spaces.
# Schemas it cannot write as the template does (non-text descriptions, a non-text default
# beside `enum`/`oneOf`, a tool without a `function`) are refused.
_TS_ARRAY = {"string": "string[]", "number": "number[]", "integer": "number[]", "boolean": "boolean[]"}


def _ts_refuse(what: str):
    from template_forge.errors import RenderError  # errors.py imports nothing from format/

    raise RenderError(f"harmony_typescript: {what}; the gpt-oss template cannot write it. Fix the tool schema.")


def _ts_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        _ts_refuse(f"{what} must be text, found {type(value).__name__}")
    return value


def _ts_null(spec: dict) -> str:
    return " | null" if spec.get("nullable") else ""


def _ts_type(spec: Any) -> str:
    """``render_typescript_type`` of the official template."""
    if not isinstance(spec, dict):
        _ts_refuse(f"a parameter schema must be an object, found {type(spec).__name__}")
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        if not items:
            return "any[]" + _ts_null(spec)
        if not isinstance(items, dict):
            _ts_refuse("`items` must be an object")
        inner = items.get("type")
        if isinstance(inner, str) and inner in _TS_ARRAY:
            return _TS_ARRAY[inner] + _ts_null(spec)
        inner = _ts_type(items)
        return ("any[]" if inner == "object | object" or len(inner) > 50 else inner + "[]") + _ts_null(spec)
    if isinstance(kind, list) and kind:
        return " | ".join(str(k) for k in kind) if len(kind) > 1 else str(kind[0])
    if spec.get("oneOf"):
        return _ts_one_of(spec["oneOf"])
    if kind == "string":
        if spec.get("enum"):
            if not isinstance(spec["enum"], list):
                _ts_refuse("`enum` must be a list")
            return '"' + '" | "'.join(str(e) for e in spec["enum"]) + '"'
        return "string" + _ts_null(spec)
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "object":
        props = spec.get("properties")
        if not props:
            return "object"
        if not isinstance(props, dict):
            _ts_refuse("`properties` must be an object")
        required = spec.get("required") or []
        fields = [f"{name}{'' if name in required else '?'}: \n                {_ts_type(p)}" for name, p in props.items()]
        return "{\n" + ", ".join(fields) + "}"
    return "any"


def _ts_one_of(variants: Any) -> str:
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        _ts_refuse("`oneOf` must be a list of schemas")
    out = []
    for v in variants:
        text = _ts_type(v)
        if v.get("description"):
            text += "// " + _ts_text(v["description"], "a oneOf variant's description")
        if "default" in v:
            text += "                    // default: " + json.dumps(v["default"], ensure_ascii=False)
        out.append(text)
    return " | \n".join(out)


def _ts_parameter(name: str, spec: Any, required: Any) -> str:
    out = ""
    if isinstance(spec, dict) and spec.get("description"):
        out += "// " + _ts_text(spec["description"], f"the description of parameter {name!r}") + "\n"
    out += f"{name}{'' if name in required else '?'}: {_ts_type(spec)}"
    if "default" in spec:
        if spec.get("enum"):
            out += ", // default: " + _ts_text(spec["default"], f"the default of enum parameter {name!r}")
        elif spec.get("oneOf"):
            out += "// default: " + _ts_text(spec["default"], f"the default of oneOf parameter {name!r}")
        else:
            out += ", // default: " + json.dumps(spec["default"], ensure_ascii=False)
    return out + ",\n"


def _harmony_typescript(tool: Any) -> str:
    f = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(f, dict):
        _ts_refuse('a tool must be {"type": "function", "function": {...}}')
    out = "// " + _ts_text(f.get("description"), "a tool's description") + "\n"
    out += "type " + _ts_text(f.get("name"), "a tool's name") + " = "
    params = f.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not props:
        return out + "() => any;\n\n"
    if not isinstance(props, dict):
        _ts_refuse("`parameters.properties` must be an object")
    required = params.get("required") or []
    return out + "(_: {\n" + "".join(_ts_parameter(n, p, required) for n, p in props.items()) + "}) => any;\n\n"


_TS_RAISE = "{{- raise_exception('harmony_typescript: the gpt-oss template cannot write this tool schema.') -}}"
register(Serialiser("harmony_typescript", _harmony_typescript, doc="gpt-oss: one tool of `namespace functions`", macro=(
    "{%- macro tf_ser_harmony_typescript(tool) -%}\n"
    "{%- set tf_f = tool.function if tool is mapping else none -%}\n"
    "{%- if tf_f is not mapping or tf_f.description is not string or tf_f.name is not string -%}" + _TS_RAISE
    + "{%- endif -%}\n"
    "{{- '// ' ~ tf_f.description ~ '\\n' ~ 'type ' ~ tf_f.name ~ ' = ' -}}\n"
    "{%- set tf_props = tf_f.parameters.properties if tf_f.parameters is mapping else none -%}\n"
    "{%- if not tf_props -%}{{- '() => any;\\n\\n' -}}\n"
    "{%- else -%}\n"
    "{%- if tf_props is not mapping -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- '(_: {\\n' -}}\n"
    "{%- for tf_n, tf_p in tf_props.items() -%}\n"
    "{%- if tf_p is mapping and tf_p.description -%}\n"
    "{%- if tf_p.description is not string -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- '// ' ~ tf_p.description ~ '\\n' -}}\n"
    "{%- endif -%}\n"
    "{{- tf_n ~ ('' if tf_n in (tf_f.parameters.required or []) else '?') ~ ': ' ~ tf_ts_type(tf_p) -}}\n"
    "{%- if tf_p.default is defined -%}\n"
    "{%- if tf_p.enum or tf_p.oneOf -%}\n"
    "{%- if tf_p.default is not string -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- (', // default: ' if tf_p.enum else '// default: ') ~ tf_p.default -}}\n"
    "{%- else -%}{{- ', // default: ' ~ (tf_p.default | tojson) -}}{%- endif -%}\n"
    "{%- endif -%}\n"
    "{{- ',\\n' -}}\n"
    "{%- endfor -%}\n"
    "{{- '}) => any;\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- macro tf_ts_null(s) -%}{{- ' | null' if s.nullable else '' -}}{%- endmacro -%}\n"
    "{%- macro tf_ts_type(s) -%}\n"
    "{%- if s is not mapping -%}" + _TS_RAISE + "\n"
    "{%- elif s.type == 'array' -%}\n"
    "{%- set tf_items = s['items'] if 'items' in s else none -%}\n"  # s['items'] alone finds dict.items
    "{%- if not tf_items -%}{{- 'any[]' ~ tf_ts_null(s) -}}\n"
    "{%- elif tf_items is not mapping -%}" + _TS_RAISE + "\n"
    "{%- elif tf_items.type is string and tf_items.type in ['string', 'number', 'integer', 'boolean'] -%}\n"
    "{{- ('number' if tf_items.type == 'integer' else tf_items.type) ~ '[]' ~ tf_ts_null(s) -}}\n"
    "{%- else -%}\n"
    "{%- set tf_inner = tf_ts_type(tf_items) -%}\n"
    "{{- ('any[]' if tf_inner == 'object | object' or tf_inner | length > 50 else tf_inner ~ '[]') ~ tf_ts_null(s) -}}\n"
    "{%- endif -%}\n"
    "{%- elif s.type is sequence and s.type is not string and s.type is not mapping and s.type | length > 0 -%}\n"
    "{{- s.type | join(' | ') if s.type | length > 1 else s.type[0] | string -}}\n"
    "{%- elif s.oneOf -%}\n"
    "{%- if s.oneOf is string or s.oneOf is mapping or s.oneOf | reject('mapping') | list | length > 0 -%}"
    + _TS_RAISE + "{%- endif -%}\n"
    "{%- for tf_v in s.oneOf -%}\n"
    "{{- tf_ts_type(tf_v) -}}\n"
    "{%- if tf_v.description -%}\n"
    "{%- if tf_v.description is not string -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- '// ' ~ tf_v.description -}}\n"
    "{%- endif -%}\n"
    "{%- if tf_v.default is defined -%}{{- '                    // default: ' ~ (tf_v.default | tojson) -}}{%- endif -%}\n"
    "{%- if not loop.last -%}{{- ' | \\n' -}}{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- elif s.type == 'string' -%}\n"
    "{%- if s.enum -%}\n"
    "{%- if s.enum is string or s.enum is mapping -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- '\"' ~ s.enum | join('\" | \"') ~ '\"' -}}\n"
    "{%- else -%}{{- 'string' ~ tf_ts_null(s) -}}{%- endif -%}\n"
    "{%- elif s.type == 'number' or s.type == 'integer' -%}{{- 'number' -}}\n"
    "{%- elif s.type == 'boolean' -%}{{- 'boolean' -}}\n"
    "{%- elif s.type == 'object' -%}\n"
    "{%- if not s.properties -%}{{- 'object' -}}\n"
    "{%- else -%}\n"
    "{%- if s.properties is not mapping -%}" + _TS_RAISE + "{%- endif -%}\n"
    "{{- '{\\n' -}}\n"
    "{%- for tf_n, tf_p in s.properties.items() -%}\n"
    "{{- tf_n ~ ('' if tf_n in (s.required or []) else '?') ~ ': \\n                ' ~ tf_ts_type(tf_p) -}}\n"
    "{%- if not loop.last -%}{{- ', ' -}}{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{{- '}' -}}\n"
    "{%- endif -%}\n"
    "{%- else -%}{{- 'any' -}}\n"
    "{%- endif -%}\n"
    "{%- endmacro -%}\n"
)))

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

register(Serialiser("gemma4_declaration", _g4_declaration, _G4_DECLARATION_MACRO.strip(),
                    "Gemma 4's `declaration:NAME{…}` tool declarations"))
register(Serialiser("gemma4_arguments", _g4_arguments, _G4_ARGUMENTS_MACRO.strip(),
                    "Gemma 4's `key:value` call arguments"))


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

register(Serialiser("hermes_signature", hermes_signature, _HERMES_MACRO, doc=(
    "Hermes 3's tool entry: a JSON-ish object whose description is a Python-typed signature.")))
