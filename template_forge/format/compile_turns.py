"""The compiled template's agentic turns: tool definitions, assistant turns with reasoning and
tool calls, tool results, each the Jinja twin of :mod:`template_forge.format.turns`.

Every function returns template lines; names the template sets start with ``tf`` so they
cannot meet a template variable (spec variables may not start with ``tf_``).
"""

from __future__ import annotations

from template_forge.format import turns
from template_forge.format.jinja import concat, jinja_literal, pieces_expression, raise_
from template_forge.format.roles import RoleTemplate, fill
from template_forge.format.serialisers import Serialiser
from template_forge.format.spec import Spec

TOOL_ROLES_JINJA = "['tool', 'ipython']"


# --------------------------------------------------------------------------- tools
def serialiser_lines(spec: Spec) -> list[str]:
    """The macros of the named serialisers the spec uses (JSON needs none: ``tojson``)."""
    writers = [block.writer for block in (spec.tools, spec.tool_calls) if block is not None]
    macros = dict.fromkeys(w.macro for w in writers if isinstance(w, Serialiser))
    return [line for macro in macros for line in macro.strip("\n").splitlines()]


def definitions_lines(spec: Spec) -> list[str]:
    """``tf_defs.text``: the tool definitions (``tf_has_tools`` says whether there are any)."""
    t = spec.tools
    lines = ["{%- set tf_has_tools = tools is defined and tools is not none and tools | length > 0 -%}"]
    if t is None:
        return lines + ["{%- if tf_has_tools -%}",
                        "    " + raise_("'this format does not render tool definitions, but tools were given.'"),
                        "{%- endif -%}"]
    each = pieces_expression(t.each.pieces, {"tool": t.writer.jinja("tool")})
    sep = jinja_literal(t.separator) if t.separator else None
    step = f"({sep} if not loop.first else '') ~ {each}" if sep else each
    return lines + [
        "{%- set tf_defs = namespace(text='') -%}",
        "{%- if tf_has_tools -%}",
        "    {%- for tool in tools -%}",
        f"        {{%- set tf_defs.text = tf_defs.text ~ {step} -%}}",
        "    {%- endfor -%}",
        "{%- endif -%}",
    ]


def tools_system_expression(spec: Spec) -> str:
    """``tools.system`` filled: the system text ``tf_st`` (none: there is none) wrapped by
    ``tools.system_text``, the definitions where ``{tools}`` is."""
    wrap = pieces_expression(spec.tools.system_text.pieces, {"instruction": "tf_st"})
    inner = f"({wrap} if tf_st is not none else '')"
    return pieces_expression(spec.tools.system.pieces, {"instruction": inner, "tools": "tf_defs.text"})


# --------------------------------------------------------------------------- call ids
def id_check_lines(spec: Spec) -> list[str]:
    """``id_length``: refuse calls and results whose ids have another length, as render() does."""
    calls = spec.tool_calls.id_length if spec.tool_calls is not None else None
    results = spec.tool_results.id_length if spec.tool_results is not None else None
    if calls is None and results is None:
        return []
    lines = ["{%- for message in messages -%}", "    {%- set tf_i = loop.index0 -%}"]
    if calls is not None:
        test = f"call.id is string and call.id | length == {calls}"
        lines += [f"    {{%- for call in (message.tool_calls or []) if not ({test}) -%}}",
                  "        " + raise_(f"'message ' ~ tf_i ~ ': tool call ids must have exactly {calls} characters.'"),
                  "    {%- endfor -%}"]
    if results is not None:
        test = f"message.tool_call_id is string and message.tool_call_id | length == {results}"
        lines += [f"    {{%- if message['role'] in {TOOL_ROLES_JINJA} and not ({test}) -%}}",
                  "        " + raise_(f"'message ' ~ tf_i ~ ': a tool result needs a tool_call_id of exactly {results} "
                                      "characters.'"),
                  "    {%- endif -%}"]
    return lines + ["{%- endfor -%}"]


# --------------------------------------------------------------------------- tool results
def tool_result_lines(spec: Spec) -> list[str]:
    r = spec.tool_results
    before, after = r.group.around("instruction")
    content = "(message['content'] | tojson)" if r.content == "json" else "message['content']"
    each = pieces_expression(r.each.pieces, {
        "instruction": content, "name": "(message['name'] if message['name'] is string else '')",
        "id": "(message['tool_call_id'] if message['tool_call_id'] is string else '')"})
    lines = [f"    {{%- elif message['role'] in {TOOL_ROLES_JINJA} -%}}"]
    if before:
        lines += [f"        {{%- if loop.first or messages[loop.index0 - 1]['role'] not in {TOOL_ROLES_JINJA} -%}}",
                  "            {{- " + pieces_expression(before, {}) + " -}}", "        {%- endif -%}"]
    lines.append("        {{- " + each + " -}}")
    if after:
        lines += [f"        {{%- if loop.last or messages[loop.index0 + 1]['role'] not in {TOOL_ROLES_JINJA} -%}}",
                  "            {{- " + pieces_expression(after, {}) + " -}}", "        {%- endif -%}"]
    return lines


# --------------------------------------------------------------------------- assistant turns
def _reasoning_lines(spec: Spec) -> list[str]:
    """``tf_reasoning`` (none when absent) and ``tf_content``, split as the renderer splits them."""
    r = spec.reasoning
    lines = ["        {%- set tf_reasoning = message['reasoning_content'] if message['reasoning_content'] is string "
             "else none -%}"]
    if r.from_content:
        o, c = (jinja_literal(x) for x in r.from_content)
        lines += [f"        {{%- if tf_reasoning is none and {c} in tf_content -%}}",
                  f"            {{%- set tf_reasoning = tf_content.split({c})[0].rstrip('\\n').split({o})[-1]"
                  ".lstrip('\\n') -%}",
                  f"            {{%- set tf_content = tf_content.split({c})[-1].lstrip('\\n') -%}}",
                  "        {%- endif -%}"]
    return lines


def _show_condition(spec: Spec) -> str:
    r = spec.reasoning
    if r.keep == "never":
        return "false"
    parts = ["(tf.last_user >= 0 and loop.index0 > tf.last_user)"] if r.keep == "after_last_user" else []
    if r.empty == "never":
        parts.append("tf_reasoning")
    elif r.empty == "final":
        parts.append("(tf_reasoning or loop.last)")
    return " and ".join(parts) or "true"


def _body_lines(spec: Spec) -> list[str]:
    """``tf_turn.body`` (reasoning block + content, as ``{instruction}``) and ``tf_turn.calls``."""
    lines = ["        {%- set tf_content = message['content'] if message['content'] is string else '' -%}"]
    if spec.reasoning is not None:
        lines += _reasoning_lines(spec)
    if spec.strip_assistant:
        lines.append("        {%- set tf_content = tf_content | trim -%}")
    lines.append("        {%- set tf_turn = namespace(body='', said=tf_content, calls='') -%}")
    if spec.reasoning is not None:
        r = spec.reasoning
        text = "(tf_reasoning or '')" + (f".strip({jinja_literal(r.strip)})" if r.strip else "")
        lines += [f"        {{%- if {_show_condition(spec)} -%}}",
                  "            {%- set tf_turn.body = " + pieces_expression(r.block.pieces, {"instruction": text})
                  + " -%}"]
        if r.content_lstrip:
            lines.append(f"            {{%- set tf_turn.said = tf_content.lstrip({jinja_literal(r.content_lstrip)}) -%}}")
        lines.append("        {%- endif -%}")
    if spec.tool_calls is not None:
        lines += _calls_lines(spec)
    return lines


def _calls_lines(spec: Spec) -> list[str]:
    tc = spec.tool_calls
    args = "call.function.arguments"
    dumped = tc.writer.jinja(args)
    if tc.arguments == "as_given":
        dumped = f"({args} if {args} is string else {dumped})"
    name = "(call.function.name | tojson)" if tc.names == "json" else "call.function.name"
    each = pieces_expression(tc.each.pieces, {
        "name": name, "arguments": dumped,
        "id": "(call.id if call.id is string else '')"})
    sep = f"({jinja_literal(tc.separator)} if not loop.first else '') ~ " if tc.separator else ""
    lines = ["        {%- if message.tool_calls -%}"]
    if tc.max_calls is not None:
        lines += [f"            {{%- if message.tool_calls | length > {tc.max_calls} -%}}",
                  "                " + raise_(f"'message ' ~ loop.index0 ~ ': the format takes at most {tc.max_calls} "
                                               "tool calls per message.'"),
                  "            {%- endif -%}"]
    if tc.after_content:
        lines.append(f"            {{%- if tf_content -%}}{{%- set tf_turn.calls = {jinja_literal(tc.after_content)} -%}}"
                     "{%- endif -%}")
    if tc.open:
        lines.append(f"            {{%- set tf_turn.calls = tf_turn.calls ~ {jinja_literal(tc.open)} -%}}")
    lines += ["            {%- for call in message.tool_calls -%}",
              f"                {{%- set tf_turn.calls = tf_turn.calls ~ {sep}{each} -%}}",
              "            {%- endfor -%}"]
    if tc.close:
        lines.append(f"            {{%- set tf_turn.calls = tf_turn.calls ~ {jinja_literal(tc.close)} -%}}")
    return lines + ["        {%- endif -%}"]


def _parts(template: RoleTemplate) -> tuple[list, list, list]:
    """A template's pieces before its first body field, the body, and after its last."""
    fields = [k for k, p in enumerate(template.pieces) if p.field in ("instruction", "calls")]
    return (list(template.pieces[: fields[0]]), list(template.pieces[fields[0] : fields[-1] + 1]),
            list(template.pieces[fields[-1] + 1 :]))


def _turn_expressions(spec: Spec, template: RoleTemplate, *, slots: bool) -> tuple[str, str, list]:
    head, body, tail = _parts(template)
    if slots:  # tool_calls.assistant: content wrapped by tool_calls.content where there is some
        wrap = pieces_expression(spec.tool_calls.content.pieces, {"instruction": "tf_turn.said"})
        instruction = f"tf_turn.body ~ ({wrap} if tf_turn.said else '')"
    else:
        instruction = "tf_turn.body ~ tf_turn.said" + (" ~ tf_turn.calls" if spec.tool_calls is not None else "")
    return (pieces_expression(head, {}),
            pieces_expression(body, {"instruction": f"({instruction})", "calls": "tf_turn.calls"}), tail)


def may_move_prompt(spec: Spec) -> bool:
    """Whether some generation prompt extends some assistant header (so what it supplies is prompt)."""
    templates = [t for t in (spec.assistant, spec.final_assistant, spec.tool_calls and spec.tool_calls.assistant) if t]
    values = spec.variable_defaults()
    heads = []
    for t in templates:
        head = _parts(t)[0]
        if any(p.field is not None for p in head):
            return True
        heads.append(fill(head, values))
    prompts = [spec.trailing_assistant] + [g.text for g in spec.generation_prompts]
    return any(p.startswith(h) and len(p) > len(h) for p in prompts for h in heads)


def stop_split(spec: Spec, pieces) -> tuple[str, str]:
    """Expressions for the trained part of an assistant suffix and the untrained rest
    (:func:`template_forge.format.turns.stop_split`)."""
    if any(p.field is not None for p in pieces):
        return pieces_expression(pieces, {}), "''"
    trained, end = turns.stop_split(spec, pieces, spec.variable_defaults())
    return jinja_literal(trained), jinja_literal(end)


def assistant_lines(spec: Spec, flavour: str) -> list[str]:
    """The general assistant turn: body and calls, the template by position and calls, the
    generation prompt's part moved to the prefix, the suffix cut at its stop string."""
    lines = _body_lines(spec)
    choices = []
    tc = spec.tool_calls
    if tc is not None and tc.assistant is not None:
        choices.append(("message.tool_calls", tc.assistant, True))
    if spec.final_assistant is not None:
        choices.append(("loop.last", spec.final_assistant, False))
    choices.append((None, spec.assistant, False))
    for k, (condition, template, slots) in enumerate(choices):
        head, body, tail = _turn_expressions(spec, template, slots=slots)
        keyword = "if" if k == 0 else "elif"
        if condition is not None or k:
            lines.append(f"        {{%- {keyword} {condition} -%}}" if condition else "        {%- else -%}")
        lines += [f"            {{%- set tf_head = {head} -%}}", f"            {{%- set tf_text = {body} -%}}"]
        trained, end = stop_split(spec, tail)
        lines += [f"            {{%- set tf_trained = {trained} -%}}", f"            {{%- set tf_end = {end} -%}}"]
    if len(choices) > 1:
        lines.append("        {%- endif -%}")
    if may_move_prompt(spec):
        lines += ["        {%- if tf_gen | length > tf_head | length and tf_gen.startswith(tf_head) and "
                  "(tf_head ~ tf_text).startswith(tf_gen) -%}",
                  "            {%- set tf_text = (tf_head ~ tf_text)[tf_gen | length:] -%}",
                  "            {%- set tf_head = tf_gen -%}",
                  "        {%- endif -%}"]
    trained = concat(["tf_text", "tf_trained"])
    if flavour == "training":
        return lines + ["        {{- tf_head -}}{%- generation -%}{{- " + trained + " -}}{%- endgeneration -%}"
                        "{{- tf_end -}}"]
    return lines + ["        {{- " + concat(["tf_head", trained, "tf_end"]) + " -}}"]
