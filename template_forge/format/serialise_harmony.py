"""gpt-oss's tool definitions: the TypeScript-like ``namespace functions`` of its template.

A pair held equal by tests: the Python half for the renderer, the Jinja macro for the compiled
template (:mod:`template_forge.format.serialisers` registers them).
"""

from __future__ import annotations

import json
from typing import Any

from template_forge.format.serialise_base import Serialiser

#: the serialisers this module defines
SERIALISERS: list[Serialiser] = []


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
SERIALISERS.append(Serialiser("harmony_typescript", _harmony_typescript, doc="gpt-oss: one tool of `namespace functions`", macro=(
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
