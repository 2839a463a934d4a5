"""The compiled template's checks: the state it tracks (the system message, the user turns the
system text and the tools go into) and the refusals, each as :func:`render` refuses.
"""

from __future__ import annotations

from template_forge.format import compile_turns
from template_forge.format.jinja import jinja_literal, raise_
from template_forge.format.spec import Spec


def users_tracked(spec: Spec) -> list[str]:
    """The user turns the template must know: where the system text or the tools go, and the
    last one before which reasoning is cut."""
    wanted = {spec.placement} & {"first_user", "last_user"}
    if spec.tools is not None and spec.tools.user is not None:
        wanted.add(tools_user_field(spec))
    if spec.reasoning is not None and spec.reasoning.keep == "after_last_user":
        wanted.add("last_user")
    return sorted(wanted)


def tools_user_field(spec: Spec) -> str:
    """The tracked user turn the definitions go to (``like_last`` compares with the last one)."""
    return f"{spec.tools.user_at}_user"


def _state_fields(spec: Spec) -> list[str]:
    """What the template tracks while checking the messages: only what this spec reads."""
    fields = []
    if spec.placement != "in_place":  # in_place renders every system message where it is
        fields.append("sys_index=-1")
        if spec.placement not in ("drop", "reject"):
            fields.append("sys_text=''")
    fields += [f"{name}=-1" for name in users_tracked(spec)]
    if spec.require_alternation:
        fields.append("turn=0")
    if spec.reasoning is not None and spec.reasoning.keep == "unanswered":
        fields.append("last_answer=-1")
    if spec.tool_results is not None and spec.tool_results.name == "latest_call":
        fields.append("call_name=none")
    return fields


def validation_lines(spec: Spec) -> list[str]:
    """Roles, content types, a single system message, alternation: as render() checks them."""
    at = "'message ' ~ loop.index0 ~ ': '"
    fields = _state_fields(spec)
    lines = [f"{{%- set tf = namespace({', '.join(fields)}) -%}}"] if fields else []
    lines += _message_checks(spec, at)
    if spec.reasoning is not None and spec.reasoning.keep == "unanswered":
        lines.append("{%- for message in messages -%}{%- if message['role'] == 'assistant' and not message.tool_calls -%}"
                     "{%- set tf.last_answer = loop.index0 -%}{%- endif -%}{%- endfor -%}")
    lines += compile_turns.id_check_lines(spec)
    lines += _track_messages(spec, at)
    if spec.placement == "reject":
        lines += [
            "{%- if tf.sys_index >= 0 -%}",
            "    " + raise_("'message ' ~ tf.sys_index ~ ': this format does not support a system message.'"),
            "{%- endif -%}",
        ]
    return lines + _alternation_lines(spec)


def _message_checks(spec: Spec, at: str) -> list[str]:
    """One loop refusing, message by message, what the renderer refuses."""
    roles = ["system", "user", "assistant"] + (list(spec.tool_results.roles) if spec.tool_results is not None else [])
    lines = [
        "{%- for message in messages -%}",
        f"    {{%- if message['role'] not in [{', '.join(jinja_literal(r) for r in roles)}] -%}}",
        "        " + raise_(at + f" ~ 'unknown role; expected one of {', '.join(roles)}.'"),
        "    {%- elif message['content'] is not string and not (message['content'] is none and message.tool_calls) -%}",
        "        " + raise_(at + " ~ 'content must be a string.'"),
    ]
    if spec.tool_calls is None:
        lines += ["    {%- elif message.tool_calls -%}",
                  "        " + raise_(at + " ~ 'this format cannot render tool calls.'")]
    for text in spec.refuse_in_assistant:
        t = jinja_literal(text)
        held = f"(message['content'] is string and {t} in message['content'])"
        if spec.reasoning is not None:  # the reasoning only where the format renders it
            held = f"({held} or (message['reasoning_content'] is string and {t} in message['reasoning_content']))"
        refusal = jinja_literal(f"an assistant message holds {text!r}, which the format refuses.")
        lines += [f"    {{%- elif message['role'] == 'assistant' and {held} -%}}", "        " + raise_(f"{at} ~ {refusal}")]
    if spec.system_position == "first" and spec.placement != "in_place":
        lines += ["    {%- elif message['role'] == 'system' and not loop.first -%}",
                  "        " + raise_(at + " ~ 'this format takes a system message only as the first message.'")]
    return lines + ["    {%- endif -%}", "{%- endfor -%}"]


def _alternation_lines(spec: Spec) -> list[str]:
    lines = []
    if spec.require_alternation and spec.system_in_alternation:  # a system message past message 0 takes a turn
        lines.append("{%- for message in (messages[1:] if messages | length > 0 and messages[0]['role'] == 'system' "
                     "else messages) if message['role'] not in ['tool', 'ipython'] and not message.tool_calls -%}")
    elif spec.require_alternation:
        lines.append(
            "{%- for message in messages if message['role'] not in ['system', 'tool', 'ipython'] and not message.tool_calls -%}")
    if spec.require_alternation:
        lines += [
            "    {%- if (message['role'] == 'user') != (tf.turn % 2 == 0) -%}",
            "        " + raise_("'Conversation roles must alternate user/assistant/user/assistant/... after the optional system message.'"),
            "    {%- endif -%}",
            "    {%- set tf.turn = tf.turn + 1 -%}",
            "{%- endfor -%}",
        ]
    return lines


def _track_messages(spec: Spec, at: str) -> list[str]:
    """The loop that finds the system message (one at most) and the user turn it goes into."""
    branches = []
    if spec.placement != "in_place":
        branches += [
            "    {%- if message['role'] == 'system' -%}",
            "        {%- if tf.sys_index >= 0 -%}",
            "            " + raise_(at + " ~ 'messages ' ~ tf.sys_index ~ ' and ' ~ loop.index0 ~ ' are both system messages; at most one is supported.'"),
            "        {%- endif -%}",
            "        {%- set tf.sys_index = loop.index0 -%}",
        ]
        if spec.placement not in ("drop", "reject"):
            branches.append("        {%- set tf.sys_text = message['content'] -%}")
    users = users_tracked(spec)
    if users:
        keyword = "elif" if branches else "if"
        branches.append(f"    {{%- {keyword} message['role'] == 'user' -%}}")
        if "first_user" in users:
            branches.append("        {%- if tf.first_user < 0 -%}{%- set tf.first_user = loop.index0 -%}{%- endif -%}")
        if "last_user" in users:
            branches.append("        {%- set tf.last_user = loop.index0 -%}")
    if not branches:
        return []
    return ["{%- for message in messages -%}", *branches, "    {%- endif -%}", "{%- endfor -%}"]
