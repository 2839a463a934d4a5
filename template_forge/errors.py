"""One exception tree for everything a user can get wrong.

Every message reads: where → what was expected → what was found → how to fix it.
The CLI turns any :class:`TemplateForgeError` into ``Error: …`` and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class TemplateForgeError(Exception):
    """Base of every error caused by user input (specs, conversations, files)."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a spec.

    Attributes:
        where: ``file:line`` (or ``<string>``) of the offending value, empty if unknown.
        path: dotted field path such as ``prompt_format.user``.
        message: what was expected, what was found, and how to fix it.
    """

    where: str
    path: str
    message: str

    def __str__(self) -> str:
        loc = ", ".join(part for part in (self.where, self.path and f"`{self.path}`") if part)
        return f"{loc}: {self.message}" if loc else self.message


class _Problems(TemplateForgeError):
    """An error carrying every problem found in one input, not just the first."""

    #: what the problems are in, for the header of a multi-problem message
    subject = "the input"

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            text = f"{len(self.problems)} problems in {self.subject}:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class SpecError(_Problems):
    """A prompt-format spec is invalid. Carries every problem found, not just the first.

    Examples:
        >>> err = SpecError([Problem("f.yaml:3", "user", "must contain {instruction}")])
        >>> str(err)
        'f.yaml:3, `user`: must contain {instruction}'
    """

    subject = "the prompt format"


class RenderError(TemplateForgeError):
    """A conversation cannot be rendered with a spec (bad role, bad content, order…).

    Attributes:
        message_index: index of the offending message in the conversation, if any.
    """

    def __init__(self, message: str, *, message_index: int | None = None):
        self.message_index = message_index
        where = f"message {message_index}: " if message_index is not None else ""
        super().__init__(where + message)


class DataError(TemplateForgeError):
    """An input file (conversations, tokenizer config) is malformed."""


class ConfigError(_Problems):
    """A training config is invalid. Carries every problem found, not just the first.

    Examples:
        >>> str(ConfigError([Problem("train.yaml:4", "num_epochs", "expected an integer ≥ 1, found 0.")]))
        'train.yaml:4, `num_epochs`: expected an integer ≥ 1, found 0.'
    """

    subject = "the training config"
