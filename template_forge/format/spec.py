"""The prompt-format spec: YAML → validated, frozen :class:`Spec`.

The vocabulary is llmforge's / Ray Serve's ``PromptFormat`` (``system``, ``user``,
``assistant``, ``trailing_assistant``, ``bos``, ``default_system_message``,
``system_in_user``, ``system_in_last_user``, ``add_system_tags_even_if_message_is_empty``,
``strip_whitespace``) with the same semantics, quirks included, plus a few optional
extensions (``system_placement``, ``strip``, ``empty_system``, ``require_alternation``,
``final_suffix``, ``variables``) that default to llmforge behaviour. ``docs/spec.md``
documents every field.

Loading is strict: unknown keys, wrong types and inconsistent combinations are all
collected and reported at once in one :class:`~template_forge.errors.SpecError`, each
with ``file:line``, the field path, what was found and how to fix it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from template_forge.errors import Problem, SpecError
from template_forge.format import agentic, agentic_checks
from template_forge.format.agentic import (
    GenerationPrompt,
    OpeningSystem,
    Reasoning,
    SystemKey,
    ToolCalls,
    ToolResults,
    Tools,
    Variable,
    VariableModel,
)
from template_forge.format.formats import builtin_file
from template_forge.format.names import name_problem
from template_forge.format.roles import Piece, RoleTemplate, check_role, parse_role_template  # noqa: F401 (Piece: re-exported, it was defined here)
from template_forge.yaml_lines import LineIndex, describe, did_you_mean, parse_yaml, pydantic_problems

Placement = Literal["separate", "in_place", "first_user", "last_user", "final_user", "drop", "reject"]
EmptySystem = Literal["auto", "render", "drop"]
UserStrip = Union[StrictBool, Literal["with_system"]]

#: Placements that put the system text into a user turn through ``{system}``.
IN_USER_PLACEMENTS = ("first_user", "last_user", "final_user")
#: Placements where the system template is a segment of its own.
OWN_SEGMENT_PLACEMENTS = ("separate", "in_place")

# Top-level keys of a format file besides `prompt_format:` (metadata, not format).
_META_KEYS = ("name", "description", "models", "conformance")


# --------------------------------------------------------------------------- models
class _StripModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: StrictBool | None = None
    user: UserStrip | None = None
    assistant: StrictBool | None = None


class _PromptFormatModel(BaseModel):
    """The YAML shape, checked field by field; cross-field rules live in `_check`."""

    model_config = ConfigDict(extra="forbid")
    # llmforge / Ray Serve vocabulary
    system: StrictStr | None = None
    user: StrictStr
    assistant: StrictStr
    trailing_assistant: StrictStr = ""
    bos: StrictStr = ""
    default_system_message: StrictStr = ""
    system_in_user: StrictBool = False
    system_in_last_user: StrictBool = False
    add_system_tags_even_if_message_is_empty: StrictBool = False
    strip_whitespace: StrictBool = True
    # extensions (all default to llmforge behaviour)
    system_placement: Placement | None = None
    strip: _StripModel | None = None
    empty_system: EmptySystem = "auto"
    require_alternation: StrictBool = False
    final_suffix: StrictStr = ""
    variables: dict[StrictStr, VariableModel] = {}
    system_text: StrictStr | None = None
    system_position: Literal["anywhere", "first"] = "anywhere"
    refuse_in_assistant: list[StrictStr] = []
    unsupported_variables: list[StrictStr] = []
    default_system_when: Literal["absent", "empty"] = "absent"
    # agentic extensions (docs/spec.md, "Tools and reasoning")
    stop: list[StrictStr] = []
    final_assistant: StrictStr | None = None
    final_when: Literal["last", "no_generation_prompt"] = "last"
    train_header_rest: StrictBool = False
    tools: agentic.ToolsModel | None = None
    tool_calls: agentic.ToolCallsModel | None = None
    tool_results: agentic.ToolResultsModel | None = None
    reasoning: agentic.ReasoningModel | None = None
    generation_prompt: list[agentic.WhenModel] = []
    opening_system: agentic.OpeningSystemModel | None = None
    continue_assistant_turns: StrictBool = False
    assistant_prefix_after: dict[agentic.PrevRole, StrictStr] = {}
    generation_prompt_after: list[agentic.PrevRole] | None = None
    system_key: agentic.SystemKeyModel | None = None
    default_system_variables: StrictBool = False
    system_in_alternation: StrictBool = False
    tokenize_apart: StrictBool = False


FIELD_NAMES = tuple(_PromptFormatModel.model_fields)
_SUB_MODELS = {"strip": _StripModel, "tools": agentic.ToolsModel, "tool_calls": agentic.ToolCallsModel,
               "tool_results": agentic.ToolResultsModel, "reasoning": agentic.ReasoningModel,
               "opening_system": agentic.OpeningSystemModel, "system_key": agentic.SystemKeyModel}


# --------------------------------------------------------------------------- frozen values
@dataclass(frozen=True)
class Spec:
    """A validated prompt format. Build it with :func:`load_spec` or :func:`spec_from_dict`.

    The ``strip_*``, ``placement`` and ``empty_system`` attributes are *resolved*: the
    llmforge defaults have been applied, so the renderer and the compiler never look
    at the raw booleans again.
    """

    system: RoleTemplate
    user: RoleTemplate
    assistant: RoleTemplate
    trailing_assistant: str
    bos: str
    default_system_message: str
    add_system_tags: bool
    placement: Placement
    empty_system: EmptySystem
    strip_system: bool
    strip_user: bool | str
    strip_assistant: bool
    require_alternation: bool
    final_suffix: str
    variables: tuple[Variable, ...]
    stop: tuple[str, ...] = ()
    final_assistant: RoleTemplate | None = None
    final_when: str = "last"  # "no_generation_prompt": the last message is final only without the prompt
    train_header_rest: bool = False  # the assistant header past the generation prompt is trained
    system_text: RoleTemplate | None = None  # set: the system template always renders, the text wrapped
    system_position: str = "anywhere"  # "first": a system message must open the conversation
    refuse_in_assistant: tuple[str, ...] = ()  # texts an assistant's content or reasoning may not hold
    unsupported_variables: tuple[str, ...] = ()  # the official template's switches we refuse when set
    default_system_when: str = "absent"  # "empty": the default also stands in for an empty opening block
    tools: Tools | None = None
    tool_calls: ToolCalls | None = None
    tool_results: ToolResults | None = None
    reasoning: Reasoning | None = None
    generation_prompts: tuple[GenerationPrompt, ...] = ()
    #: in_place: the template (and presence switches) of the system block that opens the conversation
    opening_system: OpeningSystem | None = None
    #: an assistant message after an assistant turn (tool results between aside) writes no header
    continue_assistant_turns: bool = False
    #: text before an assistant turn whose previous message (system messages aside) has the role
    assistant_prefix_after: tuple[tuple[str, str], ...] = ()
    #: the generation prompt is written only after a last message of these roles (None: always)
    generation_prompt_after: tuple[str, ...] | None = None
    #: in_place: a system message carrying this key is written by its own template (Phi-4-mini's `tools`)
    system_key: SystemKey | None = None
    default_system: RoleTemplate | None = None  # default_system_variables: the default, with {variable} fields
    system_in_alternation: bool = False
    #: message text and each tool call are tokenized on their own (Meta's ChatFormat), not the text whole
    tokenize_apart: bool = False
    name: str = ""
    description: str = ""
    models: tuple[str, ...] = ()
    source: str = ""

    @property
    def system_in_user(self) -> bool:
        return self.placement in IN_USER_PLACEMENTS

    def variable_defaults(self) -> dict[str, str | bool | None]:
        """Every variable's default (None for a clock, which reads the time of rendering)."""
        return {v.name: v.default for v in self.variables}

    @property
    def agentic(self) -> bool:
        """Whether the spec renders tools, tool calls, tool results or reasoning."""
        return any((self.tools, self.tool_calls, self.tool_results, self.reasoning))


# --------------------------------------------------------------------------- locating the format
def _locate_format(data: Any, index: LineIndex) -> tuple[Any, tuple, dict]:
    """Find the prompt format inside a bare mapping, a format file or an llmforge config.

    Returns (format mapping or built-in name, its path, metadata).
    """
    if not isinstance(data, dict):
        raise SpecError([Problem(index.where(()), "", (
            f"expected a mapping of prompt-format fields, found {describe(data)}. "
            "Write `user: ...`, `assistant: ...` etc., or `prompt_format:` with those under it.")
        )])
    gen = data.get("generation_config")
    if isinstance(gen, dict) and "prompt_format" in gen:
        fmt = gen["prompt_format"]
        stops = gen.get("stopping_sequences")
        if isinstance(fmt, dict) and "stop" not in fmt and isinstance(stops, list):
            fmt = {**fmt, "stop": stops}  # llmforge's stop strings end the trained suffix
        return fmt, ("generation_config", "prompt_format"), {}
    if "generation_config" in data or "model_id" in data:  # llmforge config: other keys are not ours
        if "prompt_format" not in data:
            raise SpecError([Problem(index.where(()), "generation_config.prompt_format", (
                "this llmforge config has no prompt format. Add `generation_config: prompt_format:` "
                "or `prompt_format: NAME` (see `tforge formats`)."))])
        return data["prompt_format"], ("prompt_format",), {}
    if "prompt_format" in data:
        problems = [
            Problem(index.where((k,)), str(k), f"unknown top-level key.{did_you_mean(k, ('prompt_format',) + _META_KEYS)} "
                    f"A format file holds `prompt_format:` and optionally {', '.join(_META_KEYS)}.")
            for k in data if k != "prompt_format" and k not in _META_KEYS
        ]
        if problems:
            raise SpecError(problems)
        meta = {k: data[k] for k in _META_KEYS if k in data}
        return data["prompt_format"], ("prompt_format",), meta
    return data, (), {}


# --------------------------------------------------------------------------- validation
def _problems(exc: ValidationError, base: tuple, index: LineIndex) -> list[Problem]:
    def known(loc: tuple) -> tuple[str, ...]:
        if len(loc) <= 1:
            return FIELD_NAMES
        model = _SUB_MODELS.get(loc[0])
        fields = model.model_fields if model is not None and len(loc) == 2 else {}
        return tuple(f.alias or name for name, f in fields.items())

    return pydantic_problems(exc, where=index.where, base=base, known=known,
                             missing=lambda loc: "is required but missing. Add it (it must contain `{instruction}`).")


def _resolve_placement(m: _PromptFormatModel, problems: list, at) -> Placement:
    legacy: Placement = (
        "separate" if not m.system_in_user else "last_user" if m.system_in_last_user else "first_user"
    )
    if m.system_in_last_user and not m.system_in_user:
        problems.append(at("system_in_last_user", (
            "is true but `system_in_user` is false: the system text can only go into the last user "
            "turn when it goes into user turns. Set `system_in_user: true` and put `{system}` in `user`.")))
    if m.system_placement is None:
        return legacy
    set_fields = m.model_fields_set
    in_user = m.system_placement in IN_USER_PLACEMENTS
    if "system_in_user" in set_fields and m.system_in_user != in_user:
        problems.append(at("system_placement", (
            f"is `{m.system_placement}` but `system_in_user` is {str(m.system_in_user).lower()}. "
            "Remove `system_in_user` (system_placement replaces it) or make them agree.")))
    if "system_in_last_user" in set_fields and m.system_in_last_user and m.system_placement != "last_user":
        problems.append(at("system_placement", (
            f"is `{m.system_placement}` but `system_in_last_user` is true. Remove one of them.")))
    return m.system_placement


def _check_variables(m: _PromptFormatModel, problems: list, at) -> None:
    for var in m.variables:
        if (message := name_problem(var)) is not None:
            problems.append(at(f"variables.{var}", message))
    for k, var in enumerate(m.unsupported_variables):
        if (message := name_problem(var, context_ok=True)) is not None:
            problems.append(at(f"unsupported_variables.{k}", f"names {var!r}, which {message}"))


def _check_strip_with_system(m: _PromptFormatModel, in_user: bool, problems: list, at) -> None:
    if not in_user:
        problems.append(at("strip.user", (
            "is `with_system` but the system text is not placed in user turns. Use true/false, "
            "or place the system text in a user turn.")))
        return
    # the user template, and `tools.user`, which replaces it in the turn that takes the tools
    for name, text in (("user", m.user), ("tools.user", m.tools.user if m.tools else None)):
        try:
            pieces = parse_role_template(text).pieces if text is not None else None
        except ValueError:
            continue  # reported where the role string is checked
        if pieces is not None and not any(a.field == "system" and b.field == "instruction"
                                          for a, b in itertools.pairwise(pieces)):
            problems.append(at("strip.user", (
                "is `with_system`, which strips the system block and the user text together, so "
                f"`{name}` must contain `{{system}}{{instruction}}` side by side. Found {text!r}.")))


def _check(m: _PromptFormatModel, base: tuple, index: LineIndex) -> tuple[dict, list[Problem]]:
    problems: list[Problem] = []

    def at(fld: str, msg: str) -> Problem:
        path = base + tuple(fld.split("."))
        return Problem(index.where(path), ".".join(str(p) for p in path), msg)

    _check_variables(m, problems, at)
    typed = agentic_checks.check_variables(m.variables, problems, at)
    placement = _resolve_placement(m, problems, at)
    variables = agentic_checks.fillable(typed)
    in_user = placement in IN_USER_PLACEMENTS
    if m.system is None and placement not in ("drop", "reject"):
        problems.append(at("system", "is required but missing. Add it, e.g. `system: \"{instruction}\\n\\n\"`."))
    system = check_role("system", m.system if m.system is not None else "{instruction}",
                         variables | {"instruction"}, {"instruction"}, problems, at)
    user_allowed = variables | {"instruction"} | ({"system"} if in_user else set())
    user = check_role("user", m.user, user_allowed, {"instruction"} | ({"system"} if in_user else set()), problems, at)
    assistant = check_role("assistant", m.assistant, variables | {"instruction"}, {"instruction"}, problems, at)
    if in_user and m.tools is not None and m.tools.system is not None:
        # Bug fix: the renderer wrote tools.system (and the system text twice) but the compiled
        # template did not; with the system text inside a user turn there is no system block to replace.
        problems.append(at("tools.system", (
            f"is given, but `system_placement` is {placement!r}: the system text goes into a user turn, so "
            "there is no system block for the tools. Use `tools.user` (a user template with `{tools}`).")))
    strip = m.strip or _StripModel()
    strip_user = strip.user if strip.user is not None else m.strip_whitespace
    if strip_user == "with_system":
        _check_strip_with_system(m, in_user, problems, at)
    if m.require_alternation is False and m.system_in_alternation:
        problems.append(at("system_in_alternation", "is true but `require_alternation` is false: nothing checks the "
                           "alternation. Set `require_alternation: true`, or remove this field."))
    resolved = dict(
        default_system=_default_system(m, variables, problems, at), system_in_alternation=m.system_in_alternation,
        system=system, user=user, assistant=assistant,
        trailing_assistant=m.trailing_assistant, bos=m.bos,
        default_system_message=m.default_system_message,
        add_system_tags=m.add_system_tags_even_if_message_is_empty,
        placement=placement, empty_system=m.empty_system,
        # llmforge quirk: the system text is only stripped when it is a message of its own.
        strip_system=strip.system if strip.system is not None else (m.strip_whitespace and placement in OWN_SEGMENT_PLACEMENTS),
        strip_user=strip_user,
        strip_assistant=strip.assistant if strip.assistant is not None else m.strip_whitespace,
        require_alternation=m.require_alternation, final_suffix=m.final_suffix,
        variables=typed, tokenize_apart=m.tokenize_apart, **agentic_checks.resolve(m, typed, problems, at),
    )
    return resolved, problems


def _default_system(m: _PromptFormatModel, variables: set[str], problems: list, at) -> RoleTemplate | None:
    """``default_system_variables``: the default system message as a role string whose
    ``{name}`` fields are variables (a clock for today's date); it must hold some literal text,
    so that whether it is empty never depends on a variable's value."""
    if not m.default_system_variables:
        return None
    template = check_role("default_system_message", m.default_system_message, variables, set(), problems, at)
    if template is not None and not any(p.field is None and p.text for p in template.pieces):
        problems.append(at("default_system_message", (
            "holds no literal text, but `default_system_variables` fills it in: write the default text around "
            "the variables, or set `default_system_variables: false`.")))
    return template


# --------------------------------------------------------------------------- public API
def spec_from_dict(data: Any, *, label: str = "<dict>", _index: LineIndex | None = None) -> Spec:
    """Validate a parsed YAML document (bare fields, ``prompt_format:``, or llmforge config).

    Examples:
        >>> s = spec_from_dict({"system": "S:{instruction}\\n", "user": "U:{instruction}\\n",
        ...                     "assistant": "A:{instruction}\\n"})
        >>> s.placement, s.strip_user
        ('separate', True)
    """
    index = _index or LineIndex(label)
    fmt, base, meta = _locate_format(data, index)
    if isinstance(fmt, str):
        return load_builtin(fmt)  # a built-in named from a config
    if not isinstance(fmt, dict):
        raise SpecError([Problem(index.where(base), ".".join(base), (
            f"expected a mapping of prompt-format fields or a built-in name, found {describe(fmt)}."))])
    try:
        model = _PromptFormatModel.model_validate(fmt)
    except ValidationError as exc:
        problems = _problems(exc, base, index)
        problems += _partial_checks(fmt, base, index)
        raise SpecError(problems) from None
    resolved, problems = _check(model, base, index)
    problems += _check_meta(meta, index)
    if problems:
        raise SpecError(problems)
    return Spec(**resolved, name=str(meta.get("name", "")), description=str(meta.get("description", "")),
                models=tuple(meta.get("models", ())), source=label)


def _partial_checks(fmt: dict, base: tuple, index: LineIndex) -> list[Problem]:
    """Role-string checks that still make sense when other fields failed type checks."""
    problems: list[Problem] = []
    for role in ("system", "user", "assistant"):
        text = fmt.get(role)
        if isinstance(text, str):
            try:
                parse_role_template(text)
            except ValueError as exc:
                problems.append(Problem(index.where(base + (role,)), ".".join(base + (role,)), f"{exc}."))
    return problems


def _check_meta(meta: dict, index: LineIndex) -> list[Problem]:
    problems = []
    models = meta.get("models", [])
    if not isinstance(models, list) or not all(isinstance(x, str) for x in models):
        problems.append(Problem(index.where(("models",)), "models", f"expected a list of model ids, found {describe(models)}."))
    for key in ("name", "description"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(Problem(index.where((key,)), key, f"expected a string, found {describe(meta[key])}."))
    return problems


def load_spec_text(text: str | bytes, *, label: str = "<string>") -> Spec:
    """Load a spec from YAML text. ``label`` names it in error messages.

    Examples:
        >>> load_spec_text("user: 'U {instruction}'\\nassistant: 'A {instruction}'\\nsystem: '{instruction}'").bos
        ''
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([Problem(label, "", f"is not UTF-8 text (byte {exc.start}). Save it as UTF-8.")]) from None
    data, index = parse_yaml(text, label)
    if index.duplicates:
        raise SpecError([
            Problem(f"{label}:{line}", ".".join(map(str, path)), "is written twice; YAML would silently keep the "
                    "last one. Delete one of them.") for path, line in index.duplicates
        ])
    return spec_from_dict(data, label=label, _index=index)


def load_spec(source: str | Path) -> Spec:
    """Load a spec from a YAML file path, or a built-in format by name.

    Examples:
        >>> load_spec("llama3").name
        'llama3'
    """
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise SpecError([Problem(str(path), "", "no such file. Give a YAML spec path or a built-in name (`tforge formats`).")])
        return load_spec_text(path.read_bytes(), label=str(path))
    return load_builtin(str(source))


@lru_cache(maxsize=None)
def load_builtin(name: str) -> Spec:
    """Load a built-in format by name (``llama3``, ``chatml``, …; see ``tforge formats``).

    Examples:
        >>> load_builtin("chatml").bos
        ''
    """
    return load_spec_text(builtin_file(name).read_text(encoding="utf-8"), label=f"templates/{name}.yaml")
