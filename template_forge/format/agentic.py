"""The agentic part of a spec: tool definitions, tool calls, tool results, reasoning, typed
variables and the generation prompt's alternatives.

Each block is optional and absent by default, so a spec without them means what it meant
before. The YAML shapes are pydantic models (checked field by field, located by
:mod:`template_forge.yaml_lines`); :func:`template_forge.format.agentic_checks.resolve` turns
them into the frozen values the renderer and the compiler read. ``docs/spec.md`` documents every field with an example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from template_forge.format.roles import RoleTemplate
from template_forge.format.serialisers import Serialiser

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
