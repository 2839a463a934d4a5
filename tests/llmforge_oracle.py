"""An independent statement of llmforge's renderer, for differential tests of render().

Written step by step from the behaviour of llmforge / Ray Serve's ``PromptFormat``
(see docs/spec.md), deliberately in the opposite style to template_forge.format.render: it
mutates a list of messages, pops the system message, re-inserts it, strips inside the
main loop and formats with ``str.format``. It knows only the ten llmforge fields.
"""

from __future__ import annotations

import copy


class OracleError(Exception):
    pass


def llmforge_render(fmt: dict, messages: list[dict], *, add_generation_prompt: bool) -> str:
    system_tpl, user_tpl, assistant_tpl = fmt["system"], fmt["user"], fmt["assistant"]
    in_user = fmt.get("system_in_user", False)
    in_last = fmt.get("system_in_last_user", False)
    add_tags = fmt.get("add_system_tags_even_if_message_is_empty", False)
    strip = fmt.get("strip_whitespace", True)
    default = fmt.get("default_system_message", "")
    msgs = copy.deepcopy(list(messages))

    # 1. find the one system message, wherever it is, and take it out
    positions = [i for i, m in enumerate(msgs) if m["role"] == "system"]
    if len(positions) > 1:
        raise OracleError("Only one system message can be specified.")
    system = msgs.pop(positions[0]) if positions else None
    if system is None and (default or add_tags):
        system = {"role": "system", "content": default}
    # 2. as its own message it goes first, unless it is empty (tested before stripping)
    if system is not None and (system["content"] or add_tags) and not in_user:
        msgs.insert(0, system)

    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    first_user, last_user = (users[0], users[-1]) if users else (-1, -1)
    parts = []
    for i, m in enumerate(msgs):
        if not isinstance(m["content"], str):
            raise OracleError("Content needs to be a string")
        if strip:
            m["content"] = m["content"].strip()
        if m["role"] == "user":
            kwargs = {"instruction": m["content"]}
            if in_user:
                kwargs["system"] = ""
                if system is not None and ((i == last_user and in_last) or (i == first_user and not in_last)):
                    kwargs["system"] = system_tpl.format(instruction=system["content"])  # not stripped
            parts.append(user_tpl.format(**kwargs))
        elif m["role"] == "system":
            parts.append(system_tpl.format(instruction=m["content"]))
        elif m["role"] == "assistant":
            parts.append(assistant_tpl.format(instruction=m["content"]))
    if add_generation_prompt:
        parts.append(fmt.get("trailing_assistant", ""))
    return fmt.get("bos", "") + "".join(parts)
