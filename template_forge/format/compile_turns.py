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
    if t is not None and t.ignore:  # accepted, not written
        return ["{%- set tf_has_tools = false -%}"]
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


def tracks_previous(spec: Spec) -> bool:
    """Whether the template tracks ``tf_prev``: the last message that is not a tool result."""
    r = spec.tool_results
    tc = spec.tool_calls
    return spec.continue_assistant_turns or (r is not None and (r.name == "call" or r.require_calls)) or (
        tc is not None and tc.after_results is not None)


def ending_prompt_lines(spec: Spec) -> list[str]:
    """The generation prompt after tool results or a turn with calls, where the spec gives
    one; the caller writes the usual prompt after these lines and closes the ``if``."""
    lines = []
    for block, test in ((spec.tool_results, f"messages[-1]['role'] in {TOOL_ROLES_JINJA}"),
                        (spec.tool_calls, "messages[-1].tool_calls")):
        if block is not None and block.generation_prompt is not None:
            keyword = "elif" if lines else "if"
            lines += [f"    {{%- {keyword} messages | length > 0 and {test} -%}}",
                      "        {{- " + jinja_literal(block.generation_prompt) + " -}}"]
    return lines + ["    {%- else -%}"] if lines else []
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
def _result_checks(spec: Spec) -> list[str]:
    """Refusals of a result the format cannot render, and its tool name (``tf_name``)."""
    r = spec.tool_results
    calls = "(messages[tf_prev.at].tool_calls if tf_prev.role == 'assistant' and messages[tf_prev.at].tool_calls " \
            "else [])"
    lines = []
    if r.require_calls:
        lines += [f"        {{%- if not {calls} -%}}",
                  "            " + raise_("'message ' ~ loop.index0 ~ ': this tool result follows no assistant message "
                                          "with tool calls.'"), "        {%- endif -%}"]
    if r.name == "call":
        lines += ["        {%- set tf_found = namespace(name=message.get('name')) -%}",
                  f"        {{%- for call in {calls} -%}}",
                  ("            {%- if call.get('id') == message.get('tool_call_id') -%}"
                   "{%- set tf_found.name = call.function.name -%}{%- endif -%}"),
                  "        {%- endfor -%}",
                  "        {%- if tf_found.name is not string -%}",
                  "            " + raise_("'message ' ~ loop.index0 ~ ': this tool result has no name and answers no "
                                          "call of the assistant message before it.'"), "        {%- endif -%}"]
    return lines


def _deferred_content_lines(spec: Spec, flavour: str) -> list[str]:
    """After the last result of a group: the content of the turn with calls they answer
    (``tool_calls.after_results``; :func:`turns.add_deferred_content`)."""
    tc = spec.tool_calls
    if tc is None or tc.after_results is None:
        return []
    before, after = tc.after_results.around("instruction")
    trained, end = stop_split(spec, after)
    content = "tf_calls['content']" + (" | trim" if spec.strip_assistant else "")
    head = pieces_expression(before, {})
    body = concat([f"({content})", trained])
    lines = [f"        {{%- if loop.last or messages[loop.index0 + 1]['role'] not in {TOOL_ROLES_JINJA} -%}}",
             "            {%- set tf_calls = messages[tf_prev.at] if tf_prev.at >= 0 else {} -%}",
             "            {%- if tf_prev.role == 'assistant' and tf_calls.tool_calls and tf_calls['content'] -%}"]
    if flavour == "training":
        out = "{%- generation -%}{{- " + concat([head, body]) + " -}}{%- endgeneration -%}{{- " + end + " -}}"
    else:
        out = "{{- " + concat([head, body, end]) + " -}}"
    return lines + ["                " + out, "            {%- endif -%}", "        {%- endif -%}"]


def tool_result_lines(spec: Spec, flavour: str = "inference") -> list[str]:
    r = spec.tool_results
    before, after = r.group.around("instruction")
    content = "(message['content'] | tojson)" if r.content == "json" else "message['content']"
    name = {"latest_call": "tf.call_name", "call": "tf_found.name"}.get(
        r.name, "(message['name'] if message['name'] is string else '')")
    each = pieces_expression(r.each.pieces, {
        "instruction": content, "name": name,
        "id": "(message['tool_call_id'] if message['tool_call_id'] is string else '')"})
    first = f"loop.first or messages[loop.index0 - 1]['role'] not in {TOOL_ROLES_JINJA}"
    lines = [f"    {{%- elif message['role'] in {TOOL_ROLES_JINJA} -%}}", *_result_checks(spec)]
    if r.name == "latest_call":
        lines += ["        {%- if tf.call_name is none -%}",
                  "            " + raise_("'message ' ~ loop.index0 ~ ': this tool result follows no assistant message "
                                          "with tool calls.'"), "        {%- endif -%}"]
    if not r.may_open:
        lines += ["        {%- if loop.first -%}",
                  "            " + raise_("'message 0: this format cannot open a conversation with a tool result.'"),
                  "        {%- endif -%}"]
    # final_group shares group's head (checked at load); only the tail after {instruction} differs
    final_after = r.final_group.around("instruction")[1] if r.final_group is not None else after
    if before:
        lines += [f"        {{%- if {first} -%}}",
                  "            {{- " + pieces_expression(before, {}) + " -}}", "        {%- endif -%}"]
    if r.separator:
        lines.append(f"        {{%- if not ({first}) -%}}{{{{- {jinja_literal(r.separator)} -}}}}{{%- endif -%}}")
    lines.append("        {{- " + each + " -}}")
    closes = f"loop.last or messages[loop.index0 + 1]['role'] not in {TOOL_ROLES_JINJA}"
    if final_after != after:
        lines += ["        {%- if loop.last -%}", "            {{- " + pieces_expression(final_after, {}) + " -}}",
                  f"        {{%- elif {closes} -%}}", "            {{- " + pieces_expression(after, {}) + " -}}",
                  "        {%- endif -%}"]
    elif after:
        lines += [f"        {{%- if {closes} -%}}", "            {{- " + pieces_expression(after, {}) + " -}}",
                  "        {%- endif -%}"]
    return lines + _deferred_content_lines(spec, flavour)


# --------------------------------------------------------------------------- assistant turns
def reasoning_expression(spec: Spec) -> str:
    """A message's reasoning (none when absent), read as :func:`turns.reasoning_of` reads it."""
    keys = spec.reasoning.keys
    if keys is None:  # transformers fills `reasoning_content` from `thinking` and `reasoning`
        return "message['reasoning_content'] if message['reasoning_content'] is string else none"
    expr = "none"
    for key in reversed(keys):
        k = jinja_literal(key)
        expr = f"(message[{k}] if message[{k}] is string and message[{k}] else {expr})"
    return expr


def _reasoning_lines(spec: Spec) -> list[str]:
    """``tf_reasoning`` (none when absent) and ``tf_content``, split as the renderer splits them."""
    r = spec.reasoning
    lines = [f"        {{%- set tf_reasoning = {reasoning_expression(spec)} -%}}"]
    if spec.tool_calls is not None and spec.tool_calls.content_as == "reasoning":
        lines += ["        {%- if message.tool_calls -%}",
                  "            {%- if tf_content and tf_reasoning -%}",
                  "                " + raise_("'message ' ~ loop.index0 ~ ': an assistant message with tool calls has both "
                                              "content and reasoning; the format writes its content as its reasoning.'"),
                  "            {%- endif -%}",
                  "            {%- set tf_reasoning = tf_content or tf_reasoning or none -%}",
                  "            {%- set tf_content = '' -%}",
                  "        {%- endif -%}"]
    if r.from_content:
        o, c = (jinja_literal(x) for x in r.from_content)
        if not r.cut_always and r.answer_lstrip == "\n":  # the usual (Qwen3) cut: as before
            lines += [f"        {{%- if tf_reasoning is none and {c} in tf_content -%}}",
                      (f"            {{%- set tf_reasoning = tf_content.split({c})[0].rstrip('\\n').split({o})[-1]"
                       ".lstrip('\\n') -%}"),
                      f"            {{%- set tf_content = tf_content.split({c})[-1].lstrip('\\n') -%}}",
                      "        {%- endif -%}"]
            return lines
        cut = f"{c} in tf_content" if r.cut_always else f"tf_reasoning is none and {c} in tf_content"
        lines += [f"        {{%- if {cut} -%}}",
                  "            {%- if tf_reasoning is none -%}",
                  (f"                {{%- set tf_reasoning = tf_content.split({c})[0].rstrip('\\n').split({o})[-1]"
                   ".lstrip('\\n') -%}"),
                  "            {%- endif -%}",
                  f"            {{%- set tf_content = tf_content.split({c})[-1].lstrip({jinja_literal(r.answer_lstrip)}) -%}}",
                  "        {%- endif -%}"]
    return lines


def final_condition(spec: Spec) -> str:
    """Whether this message is the final turn (``final_when``)."""
    return "loop.last" if spec.final_when == "last" else "(loop.last and not add_generation_prompt)"


def _show_condition(spec: Spec) -> str:
    r = spec.reasoning
    if r.keep == "never":
        return "false"
    parts = ["(tf.last_user >= 0 and loop.index0 > tf.last_user)"] if r.keep == "after_last_user" else []
    if r.keep == "unanswered":
        parts.append(f"(loop.index0 > tf.last_answer if message.tool_calls else {final_condition(spec)})")
    if r.turns == "tool_calls":
        parts.append("message.tool_calls")
    if r.empty == "given":
        parts.append("tf_reasoning is not none")
    elif r.empty == "never":
        parts.append("tf_reasoning")
    elif r.empty == "final":
        parts.append(f"(tf_reasoning or {final_condition(spec)})")
    return " and ".join(parts) or "true"


def _refusal_lines(spec: Spec) -> list[str]:
    """The assistant messages the renderer refuses (``render_checks._check_agentic_domain``)."""
    lines = []  # (strings refused in assistant text: the validation section, compiler.py)
    r = spec.reasoning
    if r is not None and r.turns == "tool_calls" and r.keep == "after_last_user":
        lines += [f"        {{%- if tf.last_user < 0 and message.tool_calls and ({reasoning_expression(spec)}) -%}}",
                  "            " + raise_("'the reasoning of a turn with tool calls is kept after the last user "
                                          "message, but this conversation has none.'"), "        {%- endif -%}"]
    return lines


def _body_lines(spec: Spec) -> list[str]:
    """``tf_turn.body`` (reasoning block + content, as ``{instruction}``) and ``tf_turn.calls``."""
    lines = ["        {%- set tf_content = message['content'] if message['content'] is string else '' -%}"]
    lines += _refusal_lines(spec)
    if spec.tool_calls is not None and spec.tool_calls.after_results is not None:
        lines.append(f"        {{%- if message.tool_calls and not loop.last and messages[loop.index0 + 1]['role'] in "
                     f"{TOOL_ROLES_JINJA} -%}}{{%- set tf_content = '' -%}}{{%- endif -%}}")
    if spec.reasoning is not None:
        lines += _reasoning_lines(spec)
    if spec.strip_assistant:
        lines.append("        {%- set tf_content = tf_content | trim -%}")
    shown = ", shown=false" if _before_turn(spec) else ""  # read only where the block goes before the turn
    lines.append(f"        {{%- set tf_turn = namespace(body='', said=tf_content, calls=''{shown}) -%}}")
    if spec.reasoning is not None:
        r = spec.reasoning
        text = "(tf_reasoning or '')" + (f".strip({jinja_literal(r.strip)})" if r.strip else "")
        lines += [f"        {{%- if {_show_condition(spec)} -%}}",
                  "            {%- set tf_turn.body = " + pieces_expression(r.block.pieces, {"instruction": text})
                  + " -%}"] + (["            {%- set tf_turn.shown = true -%}"] if shown else [])
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
    if tc.arguments in ("as_given", "string"):
        dumped = f"({args} if {args} is string else {dumped})"
    name = "(call.function.name | tojson)" if tc.names == "json" else "call.function.name"
    each = pieces_expression(tc.each.pieces, {
        "name": name, "arguments": dumped,
        "id": "(call.id if call.id is string else '')"})
    sep = f"({jinja_literal(tc.separator)} if not loop.first else '') ~ " if tc.separator else ""
    lines = ["        {%- if message.tool_calls -%}"]
    if tc.arguments == "string":
        lines += ["            {%- for call in message.tool_calls if call.function.arguments is not string -%}",
                  "                " + raise_("'message ' ~ loop.index0 ~ ': this format writes tool-call arguments "
                                              "only as a JSON string.'"),
                  "            {%- endfor -%}"]
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
    fields = [k for k, p in enumerate(template.pieces) if p.field in turns.BODY_FIELDS]
    return (list(template.pieces[: fields[0]]), list(template.pieces[fields[0] : fields[-1] + 1]),
            list(template.pieces[fields[-1] + 1 :]))


def _turn_expressions(spec: Spec, template: RoleTemplate, *, slots: bool) -> tuple[str, str, list]:
    head, body, tail = _parts(template)
    reasoning = "" if _before_turn(spec) else "tf_turn.body ~ "  # before the turn: see assistant_lines
    if slots:  # tool_calls.assistant: content wrapped by tool_calls.content where there is some
        wrap = pieces_expression(spec.tool_calls.content.pieces, {"instruction": "tf_turn.said"})
        own = "reasoning" in template.fields()  # the template places the reasoning block itself
        instruction = ("" if own else reasoning) + f"({wrap} if tf_turn.said else '')"
    else:
        instruction = f"{reasoning}tf_turn.said" + (" ~ tf_turn.calls" if spec.tool_calls is not None else "")
    return (pieces_expression(head, {}),
            pieces_expression(body, {"instruction": f"({instruction})", "reasoning": "tf_turn.body",
                                     "calls": "tf_turn.calls"}), tail)


def _before_turn(spec: Spec) -> bool:
    return spec.reasoning is not None and spec.reasoning.before_turn


def may_move_prompt(spec: Spec) -> bool:
    """Whether some generation prompt extends some assistant header (so what it supplies is
    prompt), or, with ``train_header_rest``, some header extends a generation prompt."""
    templates = [t for t in (spec.assistant, spec.final_assistant, spec.tool_calls and spec.tool_calls.assistant) if t]
    values = spec.variable_defaults()
    heads = [""] if _before_turn(spec) else []  # a reasoning block before the turn: the header is in the body
    for t in templates:
        head = _parts(t)[0]
        if any(p.field is not None for p in head):
            return True
        heads.append(fill(head, values))
    prompts = [spec.trailing_assistant] + [g.text for g in spec.generation_prompts]
    if spec.train_header_rest and any(h.startswith(p) and len(h) > len(p) for p in prompts for h in heads):
        return True
    return any(p.startswith(h) and len(p) > len(h) for p in prompts for h in heads)


def stop_split(spec: Spec, pieces) -> tuple[str, str]:
    """Expressions for the trained part of an assistant suffix and the untrained rest
    (:func:`template_forge.format.turns.stop_split`)."""
    if any(p.field is not None for p in pieces):
        return pieces_expression(pieces, {}), "''"
    trained, end = turns.stop_split(spec, pieces, spec.variable_defaults())
    return jinja_literal(trained), jinja_literal(end)


def previous_role_lines(indent: str, before: str) -> list[str]:
    """``tf_before.role``: the role of the last of ``before`` (system messages aside, "tool" for
    any tool-result role), '' when there is none (:func:`template_forge.format.render.previous_role`)."""
    return [f"{indent}{{%- set tf_before = namespace(role='') -%}}",
            f"{indent}{{%- for earlier in {before} if earlier['role'] != 'system' -%}}",
            f"{indent}    {{%- set tf_before.role = 'tool' if earlier['role'] in {TOOL_ROLES_JINJA} else earlier['role'] -%}}",
            f"{indent}{{%- endfor -%}}"]


def assistant_lines(spec: Spec, flavour: str) -> list[str]:
    """The general assistant turn: body and calls, the template by position and calls, the
    generation prompt's part moved to the prefix, the suffix cut at its stop string."""
    lines = []  # (strings refused in assistant text: the validation section, compiler.py)
    lines += _body_lines(spec)
    choices = []
    tc = spec.tool_calls
    if tc is not None and tc.assistant is not None:
        choices.append(("message.tool_calls", tc.assistant, True))
    if spec.final_assistant is not None:
        choices.append((final_condition(spec), spec.final_assistant, False))
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
    if _before_turn(spec):  # the reasoning is a message of its own: the model writes the header after it
        lines.append("        {%- if tf_turn.shown -%}{%- set tf_text = tf_turn.body ~ tf_head ~ tf_text -%}"
                     "{%- set tf_head = '' -%}{%- endif -%}")
    if spec.continue_assistant_turns:  # it continues the turn of the assistant message before it
        lines.append("        {%- if tf_prev.role == 'assistant' -%}{%- set tf_head = '' -%}{%- endif -%}")
    if spec.assistant_prefix_after:
        lines += previous_role_lines("        ", "messages[:loop.index0]")
        for role, text in spec.assistant_prefix_after:
            lines.append(f"        {{%- if tf_before.role == {jinja_literal(role)} -%}}"
                         f"{{%- set tf_head = {jinja_literal(text)} ~ tf_head -%}}{{%- endif -%}}")
    if may_move_prompt(spec):
        lines += ["        {%- if tf_gen | length > tf_head | length and tf_gen.startswith(tf_head) and "
                  "(tf_head ~ tf_text).startswith(tf_gen) -%}",
                  "            {%- set tf_text = (tf_head ~ tf_text)[tf_gen | length:] -%}",
                  "            {%- set tf_head = tf_gen -%}"]
        if spec.train_header_rest:
            lines += ["        {%- elif tf_head | length > tf_gen | length and tf_head.startswith(tf_gen) -%}",
                      "            {%- set tf_text = tf_head[tf_gen | length:] ~ tf_text -%}",
                      "            {%- set tf_head = tf_gen -%}"]
        lines.append("        {%- endif -%}")
    if spec.tool_results is not None and spec.tool_results.name == "latest_call":
        lines.append("        {%- set tf.call_name = message.tool_calls[0].function.name if message.tool_calls else none -%}")
    trained = concat(["tf_text", "tf_trained"])
    if flavour == "training":
        return lines + ["        {{- tf_head -}}{%- generation -%}{{- " + trained + " -}}{%- endgeneration -%}"
                        "{{- tf_end -}}"]
    return lines + ["        {{- " + concat(["tf_head", trained, "tf_end"]) + " -}}"]
