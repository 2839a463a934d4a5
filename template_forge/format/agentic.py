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
    user_turn: Literal["first", "last", "like_last"] = "first"
    each: StrictStr = "{tool}"
    separator: StrictStr = ""
    serialise: StrictStr = "json"
    json_: Optional[JsonModel] = Field(None, alias="json")


class ToolCallsModel(_Strict):
    assistant: Optional[StrictStr] = None
    content: StrictStr = "{instruction}"
    after_content: StrictStr = ""
    each: StrictStr
    separator: StrictStr = ""
    arguments: Literal["as_given", "json"] = "json"
    max_calls: Optional[StrictInt] = None
    serialise: StrictStr = "json"
    json_: Optional[JsonModel] = Field(None, alias="json")
    names: Literal["text", "json"] = "text"
    id_length: StrictInt | None = None
    open: StrictStr = ""
    close: StrictStr = ""


class ToolResultsModel(_Strict):
    each: StrictStr
    group: StrictStr = "{instruction}"
    content: Literal["text", "json"] = "text"
    id_length: StrictInt | None = None


class FromContentModel(_Strict):
    open: StrictStr
    close: StrictStr


class ReasoningModel(_Strict):
    block: StrictStr
    keep: Literal["all", "after_last_user", "never"] = "all"
    empty: Literal["never", "final", "always"] = "never"
    strip: StrictStr = ""
    content_lstrip: StrictStr = ""
    from_content: Optional[FromContentModel] = None


class ChoiceModel(_Strict):
    default: Union[StrictBool, StrictStr]
    choices: Optional[list[StrictStr]] = None


class ClockModel(_Strict):
    strftime: StrictStr


VariableModel = Union[StrictStr, StrictBool, ChoiceModel, ClockModel]


class WhenModel(_Strict):
    when: dict[StrictStr, Union[StrictBool, StrictStr]]
    text: StrictStr


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
    names: str = "text"  # json: {name} is written as a JSON string (quotes included)
    id_length: int | None = None  # every call needs an `id` of this length
    open: str = ""  # before the first call and after the last, inside {calls} (trained)
    close: str = ""


@dataclass(frozen=True)
class ToolResults:
    each: RoleTemplate  # with {instruction}, {name}, {id}
    group: RoleTemplate  # with {instruction}
    content: str
    id_length: int | None = None  # every result needs a `tool_call_id` of this length


@dataclass(frozen=True)
class Reasoning:
    block: RoleTemplate  # with {instruction}
    keep: str
    empty: str
    strip: str
    content_lstrip: str
    from_content: tuple[str, str] | None


@dataclass(frozen=True)
class Variable:
    """A template variable: a string default (usable as ``{name}`` in role strings), a boolean
    or a choice (used by ``generation_prompt`` conditions and as ``{name}``), or a clock
    (``strftime`` of the time of rendering, as templates call ``strftime_now``)."""

    name: str
    default: str | bool | None
    choices: tuple[str, ...] | None = None
    strftime: str | None = None

    @property
    def kind(self) -> str:
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
    """Typed variables: a choice's default must be one of its choices."""
    out = []
    for name, model in models.items():
        var = variable_of(name, model)
        if var.choices is not None and var.default not in var.choices:
            problems.append(at(f"variables.{name}.default", (
                f"is {var.default!r}, not one of its choices {list(var.choices)}. Pick one of them.")))
        out.append(var)
    return tuple(out)


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
            assistant=role("tool_calls.assistant", t.assistant, ["calls"], once=["instruction"]),
            content=role("tool_calls.content", t.content, ["instruction"]), after_content=t.after_content,
            each=role("tool_calls.each", t.each, once=["name", "arguments", "id"]), separator=t.separator,
            arguments=t.arguments, max_calls=t.max_calls, writer=writer_of("tool_calls", t, problems, at),
            names=t.names, id_length=_id_length("tool_calls", t.id_length, problems, at), open=t.open, close=t.close)
    if m.tool_results is not None:
        t = m.tool_results
        out["tool_results"] = ToolResults(
            each=role("tool_results.each", t.each, ["instruction"], once=["name", "id"]),
            group=role("tool_results.group", t.group, ["instruction"]), content=t.content,
            id_length=_id_length("tool_results", t.id_length, problems, at))
    if m.reasoning is not None:
        r = m.reasoning
        out["reasoning"] = Reasoning(
            block=role("reasoning.block", r.block, ["instruction"]), keep=r.keep, empty=r.empty, strip=r.strip,
            content_lstrip=r.content_lstrip,
            from_content=(r.from_content.open, r.from_content.close) if r.from_content else None)
    out["generation_prompts"] = _generation_prompts(m.generation_prompt, variables, problems, at)
    return out


def _id_length(field: str, length: int | None, problems: list, at) -> int | None:
    if length is not None and length < 1:
        problems.append(at(f"{field}.id_length", f"is {length}; give the length call ids must have (1 or more), "
                           "or leave it out."))
    return length


def _tools(t: ToolsModel, role, problems: list, at, *, in_user: bool) -> Tools:
    system = role("tools.system", t.system, ["instruction"], once=["tools"])
    user = role("tools.user", t.user, ["instruction", "tools"], once=["system"] if in_user else ())
    if system is not None and "tools" in system.fields() and user is not None:
        problems.append(at("tools.user", "is given, but `tools.system` already holds `{tools}`: the definitions go "
                           "in one place. Remove `{tools}` from one of them."))
    if not any(x is not None and "tools" in x.fields() for x in (system, user)):
        problems.append(at("tools", "says nowhere where the definitions go: put `{tools}` in `tools.system` or give "
                           "`tools.user` (a user template with `{tools}`)."))
    return Tools(system=system, system_text=role("tools.system_text", t.system_text, ["instruction"]), user=user,
                 user_turn=t.user_turn, each=role("tools.each", t.each, ["tool"]), separator=t.separator,
                 writer=writer_of("tools", t, problems, at))


def _generation_prompts(models: list, variables: tuple[Variable, ...], problems: list,
                        at) -> tuple[GenerationPrompt, ...]:
    by_name = {v.name: v for v in variables}
    out = []
    for k, w in enumerate(models):
        for name, value in w.when.items():
            var = by_name.get(name)
            where = f"generation_prompt.{k}.when.{name}"
            if var is None or var.kind not in ("bool", "choice"):
                problems.append(at(where, (
                    "names no boolean or choice variable of this format. Declare it under `variables:` "
                    "(e.g. `enable_thinking: true`).")))
            elif var.kind == "bool" and not isinstance(value, bool):
                problems.append(at(where, f"is {value!r}, but `{name}` is a boolean: write true or false."))
            elif var.kind == "choice" and value not in var.choices:
                problems.append(at(where, f"is {value!r}, not one of {list(var.choices)}."))
        out.append(GenerationPrompt(tuple(w.when.items()), w.text))
    return tuple(out)
