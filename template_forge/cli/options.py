"""What several commands share: option sets declared once, the encoder they build, progress bars."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any

import click

OVERFLOW_HELP = ("Samples longer than the context: drop them (counted), truncate them to their first "
                 "N tokens, or split them into pieces of N tokens, each a sample of its own.")


def tokenize_options(command):
    """The options ``tforge tokenize`` and ``tforge prepare`` share, declared once."""
    return _options([
        click.option("--format", "-f", "fmt", required=True, help="Prompt format: a spec YAML file or a built-in name."),
        click.option("--tokenizer", "-t", required=True, type=click.Path(),
                     help="Tokenizer folder (save_pretrained layout with tokenizer.json) or a tokenizer.json file."),
        click.option("--on-error", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
                     help="stop: fail on the first bad line, writing nothing. skip: leave bad lines out and report them."),
        click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: every core]."),
        click.option("--policy", type=click.Choice(["assistant", "last_assistant", "causal_lm"]), default="assistant",
                     show_default=True, help="Which tokens are trained (per-message train/weight keys override)."),
        click.option("--parse-special", is_flag=True,
                     help="Treat special-token strings inside message text as control tokens."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ])(command)


def _options(options):
    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def pack_options(command):
    """The options ``tforge pack`` and ``tforge prepare`` share, declared once."""
    return _options([
        click.option("--context-length", "-n", required=True, type=click.IntRange(min=1), help="Tokens per pack."),
        click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--overflow", type=click.Choice(["drop", "truncate", "split"]), default="drop",
                     show_default=True, help=OVERFLOW_HELP),
        click.option("--seed", default=0, show_default=True, help="Orders equal-length samples and shuffles the packs."),
    ])(command)


def wait_option(command):
    """``--wait``, for the commands that write an output folder (they hold its lock)."""
    return click.option("--wait", is_flag=True,
                        help="If another tforge run is writing the output folder, wait for it to finish "
                             "(then reuse its result if up to date) instead of stopping with an error.")(command)


def say(message: str) -> None:
    """A line on stderr (what ``on_wait`` callbacks print)."""
    click.echo(message, err=True)


def load_encoder(fmt: str, tokenizer: str, policy: str, parse_special: bool):
    """The encoder a command tokenizes with, with a warning when the tokenizer does not fit the format."""
    from template_forge.format.spec import load_spec
    from template_forge.tokens.encoder import Encoder, Vocab

    spec = load_spec(fmt)
    encoder = Encoder(spec, Vocab(tokenizer), policy=policy, parse_special=parse_special)
    for warning in encoder.pairing_warnings():
        click.echo(f"warning: {warning}", err=True)
    return encoder


def progress_bar(length: int, label: str, quiet: bool):
    return click.progressbar(length=max(length, 1), label=label, file=sys.stderr, show_pos=False,
                             show_percent=True, show_eta=True, hidden=quiet or not sys.stderr.isatty())


class _PackBar:
    """A progress bar over packs, opened at the first report (when the number of packs is known)."""

    def __init__(self, label: str, quiet: bool, before=None):
        self.label, self.quiet, self.before, self.bar = label, quiet, before, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            if self.before:
                self.before()
            self.bar = progress_bar(total, self.label, self.quiet).__enter__()
        self.bar.update(done)

    def __enter__(self) -> _PackBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def parse_value(raw: str) -> Any:
    """A ``--var`` value, typed as ``apply_chat_template`` keyword arguments are.

    ``true``/``false`` are booleans, ``none``/``null`` None (any case), integers ints;
    anything else is the string as written. Quote a value to keep it a string.

    Examples:
        >>> [parse_value(v) for v in ("false", "True", "null", "-3", "0.5", "01 Jan 2026", '"true"', "'7'")]
        [False, True, None, -3, '0.5', '01 Jan 2026', 'true', '7']
    """
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INTEGER.fullmatch(raw):
        return int(raw)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


_INTEGER = re.compile(r"[+-]?[0-9]+")

VAR_HELP = ("Set a template variable: true/false → boolean, none/null → None, integers → int, anything else "
            "a string (quote it to keep a string: 'name=\"true\"').")


def parse_vars(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as a dict of typed values (:func:`parse_value`).

    Examples:
        >>> parse_vars(("enable_thinking=false", "date_string=26 Jul 2024", "n=3"))
        {'enable_thinking': False, 'date_string': '26 Jul 2024', 'n': 3}
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected NAME=VALUE, found {pair!r}", param_hint="--var")
        out[key.strip()] = parse_value(value)
    return out


def _parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time, such as 2026-01-31 or "
                                 "2026-01-31T12:00.") from None


def variable_options(command):
    """``--var`` and ``--now``, as ``tforge render`` and ``tforge check`` take them."""
    return _options([
        click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help=VAR_HELP),
        click.option("--now", callback=_parse_now, metavar="ISO-TIME",
                     help="Freeze the clock (strftime_now, clock variables), e.g. 2026-01-31T12:00."),
    ])(command)
