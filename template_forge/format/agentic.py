"""The agentic part of a spec: tool definitions, tool calls, tool results, reasoning, typed
variables and the generation prompt's alternatives.

Each block is optional and absent by default, so a spec without them means what it meant
before. The YAML shapes are pydantic models (checked field by field, located by
:mod:`template_forge.yaml_lines`); :func:`resolve` turns them into the frozen values the
renderer and the compiler read. ``docs/spec.md`` documents every field with an example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from template_forge.format.roles import RoleTemplate, check_role
from template_forge.format.serialisers import SERIALISERS, Serialiser
from template_forge.format.serialisers import names as serialiser_names

# --------------------------------------------------------------------------- YAML shapes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonModel(_Strict):
    """How a value is serialised: the arguments of transformers' ``tojson`` filter
    (``json.dumps`` with ``ensure_ascii=False`` by default)."""

    indent: Optional[StrictInt] = None
    separators: Optional[tuple[StrictStr, StrictStr]] = None
    ensure_ascii: StrictBool = False
    sort_keys: StrictBool = False


class ToolsModel(_Strict):
    system: Optional[StrictStr] = None
    system_text: StrictStr = "{instruction}"
    user: Optional[StrictStr] = None
    user_turn: Literal["first", "last", "like_last", "opening"] = "first"
    each: StrictStr = "{tool}"
    separator: StrictStr = ""
    serialise: StrictStr = "json"
    json_: Optional[JsonModel] = Field(None, alias="json")
    required: StrictBool = False
    ignore: StrictBool = False
    system_when: Literal["always", "given"] = "always"
    strip: StrictBool = False


class ToolCallsModel(_Strict):
    assistant: Optional[StrictStr] = None
    content: StrictStr = "{instruction}"
    after_content: StrictStr = ""
    each: StrictStr
    separator: StrictStr = ""
    arguments: Literal["as_given", "json", "string"] = "json"
    max_calls: Optional[StrictInt] = None
    serialise: StrictStr = "json"
    json_: Optional[JsonModel] = Field(None, alias="json")
    content_as: Literal["content", "reasoning"] = "content"
    after_results: StrictStr | None = None
    generation_prompt: StrictStr | None = None
    names: Literal["text", "json"] = "text"
    id_length: StrictInt | None = None
    open: StrictStr = ""
    close: StrictStr = ""


class ToolResultsModel(_Strict):
    each: StrictStr
    group: StrictStr = "{instruction}"
    content: Literal["text", "json"] = "text"
    roles: list[Literal["tool", "ipython"]] = ["tool", "ipython"]
    separator: StrictStr = ""
    name: Literal["message", "call", "latest_call"] = "message"
    require_calls: StrictBool = False
    generation_prompt: StrictStr | None = None
    final_group: Optional[StrictStr] = None
    may_open: StrictBool = True
    id_length: StrictInt | None = None


class FromContentModel(_Strict):
    open: StrictStr
    close: StrictStr
    lstrip: StrictStr = "\n"
    always: StrictBool = False


class ReasoningModel(_Strict):
    block: StrictStr
    keep: Literal["all", "after_last_user", "unanswered", "never"] = "all"
    empty: Literal["never", "final", "always", "given"] = "never"
    strip: StrictStr = ""
    content_lstrip: StrictStr = ""
    from_content: Optional[FromContentModel] = None
    before_turn: StrictBool = False
    turns: Literal["all", "tool_calls"] = "all"
    keys: list[Literal["reasoning_content", "reasoning"]] | None = None


class ChoiceModel(_Strict):
    default: Union[StrictBool, StrictStr]
    choices: Optional[list[StrictStr]] = None


class ClockModel(_Strict):
    strftime: StrictStr


class DerivedModel(_Strict):
    """A text variable the switches choose: ``text`` when every ``when`` holds, else ``otherwise``."""

    when: dict[StrictStr, StrictBool | StrictStr]
    text: StrictStr
    otherwise: StrictStr = ""


#: the role of the message before an assistant turn or the generation prompt (system messages
#: aside; "tool" covers every tool-result role)
PrevRole = Literal["user", "assistant", "tool"]

VariableModel = Union[StrictStr, StrictBool, ChoiceModel, ClockModel, DerivedModel]


class WhenModel(_Strict):
    when: dict[StrictStr, Union[StrictBool, StrictStr]]
    text: StrictStr


class OpeningSystemModel(_Strict):
    template: StrictStr
    present_when: dict[StrictStr, StrictBool | StrictStr] = {}


class SystemKeyModel(_Strict):
    key: StrictStr
    template: StrictStr


# --------------------------------------------------------------------------- frozen values
@dataclass(frozen=True)
class Json:
    indent: int | None = None
    separators: tuple[str, str] | None = None
    ensure_ascii: bool = False
    sort_keys: bool = False

    def dumps(self, value) -> str:
        """Exactly what ``value | tojson(...)`` prints under transformers' renderer."""
        return json.dumps(value, ensure_ascii=self.ensure_ascii, indent=self.indent, separators=self.separators,
                          sort_keys=self.sort_keys)

    def jinja_args(self) -> str:
        """The ``tojson`` arguments that differ from the defaults, as Jinja source."""
        args = []
        if self.indent is not None:
            args.append(f"indent={self.indent}")
        if self.separators is not None:
            args.append(f"separators=({self.separators[0]!r}, {self.separators[1]!r})")
        if self.ensure_ascii:
            args.append("ensure_ascii=true")
        if self.sort_keys:
            args.append("sort_keys=true")
        return f"tojson({', '.join(args)})" if args else "tojson"

    def jinja(self, expr: str) -> str:
        """The Jinja expression that writes ``expr`` as :meth:`dumps` does."""
        return f"({expr} | {self.jinja_args()})"


#: how a value is written: JSON with ``tojson``'s options, or a named serialiser
Writer = Union[Json, Serialiser]


@dataclass(frozen=True)
class Tools:
    """Tool definitions: where they go (the system template that replaces ``system`` when tools
    are given, and/or the user template of one user turn) and how each is written."""

    system: RoleTemplate | None  # with {instruction} (and {tools}, where they go there)
    system_text: RoleTemplate  # with {instruction}
    user: RoleTemplate | None  # with {instruction} and {tools}
    user_turn: str  # first, last, or like_last: every user turn equal to the last one (Mistral)
    each: RoleTemplate  # with {tool}
    separator: str
    writer: Writer
    required: bool = False  # a conversation without tools is refused
    ignore: bool = False  # tools are accepted and not written (the official template ignores them)
    system_when: str = "always"  # "given": tools.system only when a system message renders (Llama 4)
    strip: bool = False  # the turn taking tools.user has its content stripped (Llama 4's `|trim`)

    @property
    def user_at(self) -> str:
        """``first`` or ``last``: which tracked user turn takes ``tools.user`` (``opening`` is the
        first, which must then open the conversation, system message aside; ``like_last``
        compares every user message with the last one)."""
        return {"opening": "first", "like_last": "last"}.get(self.user_turn, self.user_turn)

    @property
    def standalone(self) -> bool:
        """``system`` without ``{instruction}``: a block of its own before the system message,
        which renders as it does without tools (Hermes 3)."""
        return self.system is not None and "instruction" not in self.system.fields()


@dataclass(frozen=True)
class ToolCalls:
    assistant: RoleTemplate | None  # {calls} (and optionally {instruction}); None: `assistant`
    content: RoleTemplate  # with {instruction}
    after_content: str
    each: RoleTemplate  # with {name}, {arguments}, {id}
    separator: str
    arguments: str
    max_calls: int | None
    writer: Writer
    content_as: str = "content"  # "reasoning": a turn's content is its reasoning (gpt-oss's analysis)
    after_results: RoleTemplate | None = None  # with {instruction}: the content, after the results
    generation_prompt: str | None = None  # when the conversation ends with such a turn
    names: str = "text"  # json: {name} is written as a JSON string (quotes included)
    id_length: int | None = None  # every call needs an `id` of this length
    open: str = ""  # before the first call and after the last, inside {calls} (trained)
    close: str = ""


@dataclass(frozen=True)
class ToolResults:
    each: RoleTemplate  # with {instruction}, {name}, {id}
    group: RoleTemplate  # with {instruction}
    content: str
    roles: tuple[str, ...] = ("tool", "ipython")  # the roles a result may have; others are refused
    separator: str = ""  # between the results of one group
    #: `call`: the name of the call the result answers (by id); `latest_call`: of the latest
    #: tool-call turn's first call, whatever the result's id (gpt-oss)
    name: str = "message"
    require_calls: bool = False  # refuse a result that follows no assistant turn with calls
    generation_prompt: str | None = None  # when the conversation ends with tool results
    final_group: RoleTemplate | None = None  # the group that ends the conversation; None: `group`
    may_open: bool = True  # False: a result may not be message 0
    id_length: int | None = None  # every result needs a `tool_call_id` of this length


@dataclass(frozen=True)
class Reasoning:
    block: RoleTemplate  # with {instruction}
    keep: str
    empty: str
    strip: str
    content_lstrip: str
    from_content: tuple[str, str] | None
    before_turn: bool = False  # the block stands before the assistant template, a message of its own
    turns: str = "all"  # `tool_calls`: only turns that make tool calls show their reasoning
    #: the message keys read, the first non-empty one wins (None: `reasoning_content` alone, which
    #: transformers fills from `thinking` and `reasoning` when it is null)
    keys: tuple[str, ...] | None = None
    answer_lstrip: str = "\n"  # stripped from the start of the answer after the closing tag
    cut_always: bool = False  # cut the content even when `reasoning_content` is given


@dataclass(frozen=True)
class Variable:
    """A template variable: a string default (usable as ``{name}`` in role strings), a boolean
    or a choice (used by ``generation_prompt`` conditions and as ``{name}``), or a clock
    (``strftime`` of the time of rendering, as templates call ``strftime_now``)."""

    name: str
    default: str | bool | None
    choices: tuple[str, ...] | None = None
    strftime: str | None = None
    #: a derived text: (conditions, text when they hold, text otherwise); not set by callers
    derived: tuple[tuple[tuple[str, str | bool], ...], str, str] | None = None

    @property
    def kind(self) -> str:
        if self.derived is not None:
            return "derived"
        if self.strftime is not None:
            return "clock"
        if isinstance(self.default, bool):
            return "bool"
        return "choice" if self.choices else "string"


@dataclass(frozen=True)
class GenerationPrompt:
    """``text`` replaces ``trailing_assistant`` when every ``when`` variable has its value."""

    when: tuple[tuple[str, str | bool], ...]
    text: str


@dataclass(frozen=True)
class OpeningSystem:
    """The system block that opens the conversation (``in_place``): its own template, and
    the switches under which it is written even without a system message."""

    template: RoleTemplate  # with {instruction}
    present_when: tuple[tuple[str, str | bool], ...]


@dataclass(frozen=True)
class SystemKey:
    """A system message carrying ``key`` (not null) is written by ``template``, whose
    ``{key}`` is that key's text (Phi-4-mini's ``tools`` string)."""

    key: str
    template: RoleTemplate  # with {instruction} and {key}


def holds(when, values) -> bool:
    """Whether every condition ``(name, value)`` holds (same type, same value).

    Examples:
        >>> holds((("enable_thinking", True),), {"enable_thinking": True}), holds((("x", True),), {"x": 1})
        (True, False)
    """
    return all(values.get(k) == v and type(values.get(k)) is type(v) for k, v in when)


def variable_of(name: str, model) -> Variable:
    if isinstance(model, ClockModel):
        return Variable(name, None, strftime=model.strftime)
    if isinstance(model, ChoiceModel):
        return Variable(name, model.default, tuple(model.choices) if model.choices is not None else None)
    return Variable(name, model)


def json_of(model: JsonModel | None) -> Json:
    if model is None:
        return Json()
    return Json(model.indent, tuple(model.separators) if model.separators else None, model.ensure_ascii,
                model.sort_keys)


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


# --------------------------------------------------------------------------- checks
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
        t = m.tool_calls
        if t.max_calls is not None and t.max_calls < 1:
            problems.append(at("tool_calls.max_calls", f"is {t.max_calls}; give 1 or more, or leave it out."))
        out["tool_calls"] = ToolCalls(
            assistant=role("tool_calls.assistant", t.assistant, ["calls"], once=["instruction", "reasoning"]),
            content=role("tool_calls.content", t.content, ["instruction"]), after_content=t.after_content,
            each=role("tool_calls.each", t.each, once=["name", "arguments", "id"]), separator=t.separator,
            arguments=t.arguments, max_calls=t.max_calls, writer=writer_of("tool_calls", t, problems, at),
            content_as=t.content_as, generation_prompt=t.generation_prompt,
            after_results=role("tool_calls.after_results", t.after_results, ["instruction"]),
            names=t.names, id_length=_id_length("tool_calls", t.id_length, problems, at), open=t.open, close=t.close)
        if t.after_results is not None and t.assistant is None:
            problems.append(at("tool_calls.after_results", "is given without `tool_calls.assistant`, the turn whose "
                               "content it moves. Give both, or neither."))
    if m.tool_results is not None:
        t = m.tool_results
        group = role("tool_results.group", t.group, ["instruction"])
        final = role("tool_results.final_group", t.final_group, ["instruction"])
        if group is not None and final is not None and group.around("instruction")[0] != final.around("instruction")[0]:
            problems.append(at("tool_results.final_group", (
                "differs from `group` before `{instruction}`; it may differ only after it (the text that closes "
                "the group). Start it as `group` does.")))
        out["tool_results"] = ToolResults(
            each=role("tool_results.each", t.each, ["instruction"], once=["name", "id"]), group=group,
            content=t.content, separator=t.separator, final_group=final, may_open=t.may_open,
            name=t.name, require_calls=t.require_calls, generation_prompt=t.generation_prompt, roles=tuple(t.roles),
            id_length=_id_length("tool_results", t.id_length, problems, at))
        if not t.roles:
            problems.append(at("tool_results.roles", "is empty: no result could be rendered. Give `[tool]`, "
                               "`[ipython]` or both, or remove `tool_results`."))
    if m.tool_calls is not None and m.tool_calls.content_as == "reasoning" and m.reasoning is None:
        problems.append(at("tool_calls.content_as", "is `reasoning`, but the format has no `reasoning` block to write "
                           "it with. Add `reasoning: {block: ...}`, or remove `content_as`."))
    if m.reasoning is not None:
        r = m.reasoning
        out["reasoning"] = Reasoning(
            block=role("reasoning.block", r.block, ["instruction"]), keep=r.keep, empty=r.empty, strip=r.strip,
            content_lstrip=r.content_lstrip,
            from_content=(r.from_content.open, r.from_content.close) if r.from_content else None, turns=r.turns,
            keys=tuple(r.keys) if r.keys is not None else None, before_turn=r.before_turn,
            answer_lstrip=r.from_content.lstrip if r.from_content else "\n",
            cut_always=r.from_content.always if r.from_content else False)
        if r.keys == []:
            problems.append(at("reasoning.keys", "is empty, so no reasoning is ever read. Name a key, or leave it out."))
    out["generation_prompts"] = _generation_prompts(m.generation_prompt, variables, problems, at)
    out["continue_assistant_turns"] = m.continue_assistant_turns
    if m.opening_system is not None:
        o = m.opening_system
        if m.system_placement != "in_place":
            problems.append(at("opening_system", (
                "is given, but `system_placement` is not `in_place`: the opening system block differs from later "
                "ones only when system messages render where they stand. Set `system_placement: in_place`.")))
        out["opening_system"] = OpeningSystem(
            role("opening_system.template", o.template, ["instruction"]),
            check_when("opening_system.present_when", o.present_when, variables, problems, at))
    out["assistant_prefix_after"] = tuple(m.assistant_prefix_after.items())
    out["generation_prompt_after"] = tuple(m.generation_prompt_after) if m.generation_prompt_after is not None else None
    if m.system_key is not None:
        out["system_key"] = _system_key(m, role, problems, at)
    return out


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
        if not name.isidentifier() or name.startswith("tf_") or name in m.variables:
            problems.append(at("unsupported_variables", (
                f"names {name!r}, which is not an identifier, starts with `tf_` or is a declared variable. "
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
    user = role("tools.user", t.user, ["instruction", "tools"], once=["system"] if in_user else ())
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
