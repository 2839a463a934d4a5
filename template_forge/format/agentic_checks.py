"""Checks of the agentic part of a spec: the YAML shapes of :mod:`template_forge.format.agentic`,
validated field by field (every problem collected, located by ``at``) and resolved into the
frozen values the renderer and the compiler read.
"""

from __future__ import annotations

from template_forge.format.agentic import (
    DerivedModel,
    GenerationPrompt,
    Json,
    OpeningSystem,
    Reasoning,
    ReasoningModel,
    SystemKey,
    ToolCalls,
    ToolCallsModel,
    ToolResults,
    ToolResultsModel,
    Tools,
    ToolsModel,
    Variable,
    Writer,
    holds,
    json_of,
    variable_of,
)
from template_forge.format.roles import check_role
from template_forge.format.serialisers import SERIALISERS
from template_forge.format.serialisers import names as serialiser_names


def writer_of(field: str, model, problems: list, at) -> Writer:
    """``serialise`` and ``json`` of a tools or tool_calls block: JSON with its options, or a
    named serialiser (which takes no JSON options)."""
    if model.serialise == "json":
        return json_of(model.json_)
    found = SERIALISERS.get(model.serialise)
    if found is None:
        problems.append(at(f"{field}.serialise", (
            f"is {model.serialise!r}, which is not a serialiser. Use one of {serialiser_names()}.")))
        return Json()
    if model.json_ is not None:
        problems.append(at(f"{field}.json", (
            f"sets JSON options, but `serialise` is {model.serialise!r}, which writes its own text. "
            "Remove `json`, or use `serialise: json`.")))
    return found


def check_variables(models: dict, problems: list, at) -> tuple[Variable, ...]:
    """Typed variables: a choice's default must be one of its choices; a derived text's
    conditions name boolean or choice variables (its default is what their defaults choose)."""
    out = []
    for name, model in models.items():
        if isinstance(model, DerivedModel):
            continue
        var = variable_of(name, model)
        if var.choices is not None and var.default not in var.choices:
            problems.append(at(f"variables.{name}.default", (
                f"is {var.default!r}, not one of its choices {list(var.choices)}. Pick one of them.")))
        out.append(var)
    defaults = {v.name: v.default for v in out}
    for name, model in models.items():
        if isinstance(model, DerivedModel):
            when = check_when(f"variables.{name}.when", model.when, tuple(out), problems, at)
            value = model.text if holds(when, defaults) else model.otherwise
            out.append(Variable(name, value, derived=(when, model.text, model.otherwise)))
    return tuple(out)


def check_when(where: str, when: dict, variables: tuple[Variable, ...], problems: list,
               at) -> tuple[tuple[str, str | bool], ...]:
    """Conditions on switches: each names a boolean or choice variable and one of its values."""
    by_name = {v.name: v for v in variables}
    for name, value in when.items():
        var = by_name.get(name)
        if var is None or var.kind not in ("bool", "choice"):
            problems.append(at(f"{where}.{name}", (
                "names no boolean or choice variable of this format. Declare it under `variables:` "
                "(e.g. `enable_thinking: true`).")))
        elif var.kind == "bool" and not isinstance(value, bool):
            problems.append(at(f"{where}.{name}", f"is {value!r}, but `{name}` is a boolean: write true or false."))
        elif var.kind == "choice" and value not in var.choices:
            problems.append(at(f"{where}.{name}", f"is {value!r}, not one of {list(var.choices)}."))
    return tuple(when.items())


def fillable(variables: tuple[Variable, ...]) -> set[str]:
    """Variables a role string may name as ``{field}`` (booleans only select alternatives)."""
    return {v.name for v in variables if v.kind != "bool"}


def resolve(m, variables: tuple[Variable, ...], problems: list, at) -> dict:
    """The agentic Spec fields of a validated prompt-format model ``m``."""
    names = fillable(variables)

    def role(field, text, required=(), once=(), extra=()):
        return check_role(field, text, names | set(required) | set(once) | set(extra), set(required), problems, at,
                          once=frozenset(once))

    out: dict = {"stop": tuple(m.stop)}
    if "" in m.stop:
        problems.append(at("stop", "holds an empty string, which would stop at once. Remove it."))
    out["final_assistant"] = role("final_assistant", m.final_assistant, ["instruction"])
    out.update(_system_and_final(m, role, problems, at))
    if m.tools is not None:
        # Fix: `tools.user` replaces `user` for its turn, so it may hold `{system}` where `user`
        # does (the renderer and the compiler write it; the check used to refuse it).
        in_user = m.system_placement in ("first_user", "last_user", "final_user") or (
            m.system_placement is None and m.system_in_user)
        out["tools"] = _tools(m.tools, role, problems, at, in_user=in_user)
    if m.tool_calls is not None:
        out["tool_calls"] = _tool_calls(m.tool_calls, role, problems, at)
    if m.tool_results is not None:
        out["tool_results"] = _tool_results(m.tool_results, role, problems, at)
    if m.tool_calls is not None and m.tool_calls.content_as == "reasoning" and m.reasoning is None:
        problems.append(at("tool_calls.content_as", "is `reasoning`, but the format has no `reasoning` block to write "
                           "it with. Add `reasoning: {block: ...}`, or remove `content_as`."))
    if m.reasoning is not None:
        out["reasoning"] = _reasoning(m.reasoning, role, problems, at)
    out["generation_prompts"] = _generation_prompts(m.generation_prompt, variables, problems, at)
    out["continue_assistant_turns"] = m.continue_assistant_turns
    if m.opening_system is not None:
        out["opening_system"] = _opening_system(m, variables, role, problems, at)
    out["assistant_prefix_after"] = tuple(m.assistant_prefix_after.items())
    out["generation_prompt_after"] = tuple(m.generation_prompt_after) if m.generation_prompt_after is not None else None
    if m.system_key is not None:
        out["system_key"] = _system_key(m, role, problems, at)
    return out


def _tool_calls(t: ToolCallsModel, role, problems: list, at) -> ToolCalls:
    if t.max_calls is not None and t.max_calls < 1:
        problems.append(at("tool_calls.max_calls", f"is {t.max_calls}; give 1 or more, or leave it out."))
    if t.after_results is not None and t.assistant is None:
        problems.append(at("tool_calls.after_results", "is given without `tool_calls.assistant`, the turn whose "
                           "content it moves. Give both, or neither."))
    return ToolCalls(
        assistant=role("tool_calls.assistant", t.assistant, ["calls"], once=["instruction", "reasoning"]),
        content=role("tool_calls.content", t.content, ["instruction"]), after_content=t.after_content,
        each=role("tool_calls.each", t.each, once=["name", "arguments", "id"]), separator=t.separator,
        arguments=t.arguments, max_calls=t.max_calls, writer=writer_of("tool_calls", t, problems, at),
        content_as=t.content_as, generation_prompt=t.generation_prompt,
        after_results=role("tool_calls.after_results", t.after_results, ["instruction"]),
        names=t.names, id_length=_id_length("tool_calls", t.id_length, problems, at), open=t.open, close=t.close)


def _tool_results(t: ToolResultsModel, role, problems: list, at) -> ToolResults:
    group = role("tool_results.group", t.group, ["instruction"])
    final = role("tool_results.final_group", t.final_group, ["instruction"])
    if group is not None and final is not None and group.around("instruction")[0] != final.around("instruction")[0]:
        problems.append(at("tool_results.final_group", (
            "differs from `group` before `{instruction}`; it may differ only after it (the text that closes "
            "the group). Start it as `group` does.")))
    if not t.roles:
        problems.append(at("tool_results.roles", "is empty: no result could be rendered. Give `[tool]`, "
                           "`[ipython]` or both, or remove `tool_results`."))
    return ToolResults(
        each=role("tool_results.each", t.each, ["instruction"], once=["name", "id"]), group=group,
        content=t.content, separator=t.separator, final_group=final, may_open=t.may_open,
        name=t.name, require_calls=t.require_calls, generation_prompt=t.generation_prompt, roles=tuple(t.roles),
        id_length=_id_length("tool_results", t.id_length, problems, at))


def _reasoning(r: ReasoningModel, role, problems: list, at) -> Reasoning:
    if r.keys == []:
        problems.append(at("reasoning.keys", "is empty, so no reasoning is ever read. Name a key, or leave it out."))
    cut = r.from_content
    return Reasoning(
        block=role("reasoning.block", r.block, ["instruction"]), keep=r.keep, empty=r.empty, strip=r.strip,
        content_lstrip=r.content_lstrip, from_content=(cut.open, cut.close) if cut else None, turns=r.turns,
        keys=tuple(r.keys) if r.keys is not None else None, before_turn=r.before_turn,
        answer_lstrip=cut.lstrip if cut else "\n", cut_always=cut.always if cut else False)


def _opening_system(m, variables: tuple[Variable, ...], role, problems: list, at) -> OpeningSystem:
    o = m.opening_system
    if m.system_placement != "in_place":
        problems.append(at("opening_system", (
            "is given, but `system_placement` is not `in_place`: the opening system block differs from later "
            "ones only when system messages render where they stand. Set `system_placement: in_place`.")))
    return OpeningSystem(role("opening_system.template", o.template, ["instruction"]),
                         check_when("opening_system.present_when", o.present_when, variables, problems, at))


#: message keys a template reads for its own purpose: not a system message's extra text
_MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content", "thinking", "reasoning"}


def _system_key(m, role, problems: list, at) -> SystemKey | None:
    k = m.system_key
    if not k.key.isidentifier() or k.key in _MESSAGE_KEYS or k.key in m.variables:
        problems.append(at("system_key.key", f"is {k.key!r}, which is not an identifier, or is a key messages "
                           "already use, or a declared variable. Name the system message's own key, e.g. `tools`."))
        return None
    if m.system_placement != "in_place":
        problems.append(at("system_key", "is given, but `system_placement` is not `in_place`: a keyed system "
                           "message renders where it stands. Set `system_placement: in_place`."))
    if m.tools is not None and m.tools.system is not None:
        problems.append(at("system_key", "is given with `tools.system`, which takes the opening system message (and "
                           "would drop its key). Put the definitions in `tools.user`, or remove `system_key`."))
    template = role("system_key.template", k.template, ["instruction", k.key])
    return SystemKey(k.key, template) if template is not None else None


def _system_and_final(m, role, problems: list, at) -> dict:
    """The fields that shape the system block and the final turn (gpt-oss's, first)."""
    separate = m.system_placement in (None, "separate") and not m.system_in_user
    if m.system_text is not None and not separate:
        problems.append(at("system_text", "is given, but the system block is not `separate`: the wrapped system "
                           "text stands in its own block. Remove `system_text`, or use `system_placement: separate`."))
    if m.system_position == "first" and m.system_placement == "in_place":
        problems.append(at("system_position", "is `first`, but `in_place` renders every system message where it "
                           "stands. Remove `system_position`, or use another placement."))
    if m.tools is not None and m.tools.system_when == "given" and (not separate or m.tools.system is None):
        problems.append(at("tools.system_when", "is `given`, which needs `tools.system` and a `separate` system "
                           "block (the block it writes only when a system message does). Remove `system_when`, or "
                           "give `tools.system` with `system_placement: separate`."))
    if m.tools is not None and m.tools.strip and m.tools.user is None:
        problems.append(at("tools.strip", "is true, but there is no `tools.user`: it strips the content of the turn "
                           "that takes the definitions there. Remove `strip`, or give `tools.user`."))
    if "" in m.refuse_in_assistant:
        problems.append(at("refuse_in_assistant", "holds an empty string, which every message holds. Remove it."))
    if m.default_system_when == "empty" and (m.system_placement != "in_place" or not m.default_system_message):
        problems.append(at("default_system_when", "is `empty`, which makes the default system message stand in for "
                           "an empty opening system block, but there is no such block or default: it needs "
                           "`system_placement: in_place` and a `default_system_message`. Add them, or remove it."))
    for name in m.unsupported_variables:
        if not name.isidentifier() or name in m.variables:  # reserved names (`tf_*`): format/names.py
            problems.append(at("unsupported_variables", (
                f"names {name!r}, which is not an identifier or is a declared variable. "
                "Name the official template's switch, e.g. `builtin_tools`.")))
    return {"unsupported_variables": tuple(m.unsupported_variables), "final_when": m.final_when,
            "default_system_when": m.default_system_when,
            "train_header_rest": m.train_header_rest,
            "system_text": role("system_text", m.system_text, ["instruction"]), "system_position": m.system_position,
            "refuse_in_assistant": tuple(m.refuse_in_assistant)}


def _id_length(field: str, length: int | None, problems: list, at) -> int | None:
    if length is not None and length < 1:
        problems.append(at(f"{field}.id_length", f"is {length}; give the length call ids must have (1 or more), "
                           "or leave it out."))
    return length


def _tools(t: ToolsModel, role, problems: list, at, *, in_user: bool) -> Tools:
    # without {instruction}, tools.system is a block of its own (Tools.standalone)
    system = role("tools.system", t.system, once=["instruction", "tools"])
    # `tools.user` replaces `user` in its turn, which may be the one the system text goes into:
    # it takes `{system}` as `user` does, or the system text would be lost there
    user = role("tools.user", t.user, ["instruction", "tools"] + (["system"] if in_user else []))
    if system is not None and "tools" in system.fields() and user is not None:
        problems.append(at("tools.user", "is given, but `tools.system` already holds `{tools}`: the definitions go "
                           "in one place. Remove `{tools}` from one of them."))
    if not t.ignore and not any(x is not None and "tools" in x.fields() for x in (system, user)):
        problems.append(at("tools", "says nowhere where the definitions go: put `{tools}` in `tools.system` or give "
                           "`tools.user` (a user template with `{tools}`)."))
    return Tools(system=system, system_text=role("tools.system_text", t.system_text, ["instruction"]), user=user,
                 user_turn=t.user_turn, each=role("tools.each", t.each, ["tool"]), separator=t.separator,
                 writer=writer_of("tools", t, problems, at), required=t.required,
                 ignore=t.ignore, system_when=t.system_when, strip=t.strip)


def _generation_prompts(models: list, variables: tuple[Variable, ...], problems: list,
                        at) -> tuple[GenerationPrompt, ...]:
    return tuple(GenerationPrompt(check_when(f"generation_prompt.{k}.when", w.when, variables, problems, at), w.text)
                 for k, w in enumerate(models))
