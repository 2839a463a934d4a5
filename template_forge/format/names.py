"""Names a spec's template variables may not take, and why.

A variable ``name`` becomes a Jinja name in the compiled template (``{{ name }}``,
``{% if name is not defined %}{% set name = default %}``) and a keyword argument of
``apply_chat_template(..., name=value)``. A name Jinja parses as an operator (``not``) makes
a template that does not parse; a Jinja or transformers global (``cycler``, ``lipsum``) is
always defined, so the default never applies and the template prints the global; a name
the compiled template sets itself (``tf``, ``message``) is overwritten; a name
``apply_chat_template`` takes as a parameter (``tokenize``) or fills from the tokenizer
(``pad_token``) never reaches the template as the variable. Each of these renders
differently from :func:`~template_forge.format.render.render`, so :func:`reserved_reason`
refuses them when the spec is loaded.

Examples:
    >>> reserved_reason("lipsum")
    'is a Jinja global (always defined, so the default would never apply)'
    >>> reserved_reason("date_string") is None
    True
"""

from __future__ import annotations

from template_forge.format.roles import _IDENT

#: Words Jinja's expression parser reads as operators or constants.
JINJA_KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "if", "else", "elif", "true", "false", "none", "True", "False", "None",
})
#: Names every Jinja template can read: the environment's globals (Jinja's and the ones
#: transformers adds) and the names Jinja defines inside loops, macros and blocks.
JINJA_GLOBALS = frozenset({
    "range", "dict", "lipsum", "cycler", "joiner", "namespace", "raise_exception", "strftime_now",
    "loop", "self", "caller", "varargs", "kwargs", "super",
})
#: What transformers passes to the template, the parameters of ``apply_chat_template`` (a
#: variable named so would be taken as the parameter) and the tokenizer's special tokens
#: (``apply_chat_template`` passes them to every template).
CONTEXT_NAMES = frozenset({
    "messages", "tools", "documents", "add_generation_prompt", "conversation", "conversations",
    "chat_template", "continue_final_message", "tokenize", "sanitize_control_tokens", "padding",
    "truncation", "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
    "tokenizer_kwargs", "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
    "mask_token", "additional_special_tokens",
})
#: Names the compiled template sets (besides ``tf_*``): its namespace ``tf``, the role fields
#: and its loop and macro variables (``tests/format/test_hostile_specs.py`` holds this list
#: to what the compiler writes, over every built-in format).
COMPILER_NAMES = frozenset({
    "tf", "ns", "instruction", "system", "message", "arguments", "basic", "call", "d", "earlier", "escape_keys",
    "fn", "inner", "items", "k", "key", "kind", "params", "parts", "properties", "props", "response", "s", "t",
    "tool", "v", "val", "value", "x",
})
#: Every reserved name (``tf_*`` is reserved too).
RESERVED_NAMES = JINJA_KEYWORDS | JINJA_GLOBALS | CONTEXT_NAMES | COMPILER_NAMES


def reserved_reason(name: str, *, context_ok: bool = False) -> str | None:
    """Why ``name`` cannot be a template variable, or None when it can.

    Args:
        name: the variable's name.
        context_ok: the name is read from ``apply_chat_template``'s arguments only (an
            ``unsupported_variables`` switch), so transformers' own names are allowed.
    """
    if not _IDENT.match(name):
        return "is not an identifier (letters, digits and underscores, not starting with a digit)"
    if name in JINJA_KEYWORDS:
        return "is a Jinja keyword (the compiled template would not parse)"
    if name in JINJA_GLOBALS:
        return "is a Jinja global (always defined, so the default would never apply)"
    if name == "tf" or name.startswith("tf_") or name in COMPILER_NAMES:
        return "is a name the compiled template sets itself (it and the variable would overwrite each other)"
    if name in CONTEXT_NAMES and not context_ok:
        return ("is a name transformers passes to the template or takes as an `apply_chat_template` argument "
                "(the variable would never reach the template)")
    return None


def name_problem(name: str, *, context_ok: bool = False) -> str | None:
    """The message for a reserved ``name``, with what to do, or None.

    Examples:
        >>> name_problem("not")
        'is a Jinja keyword (the compiled template would not parse). Rename the variable, e.g. `my_not`.'
    """
    reason = reserved_reason(name, context_ok=context_ok)
    if reason is None:
        return None
    fixed = "".join(c if c.isalnum() or c == "_" else "_" for c in name).lstrip("_") or "var"
    suggestion = f"my_{fixed}"
    return f"{reason}. Rename the variable, e.g. `{suggestion}`."
