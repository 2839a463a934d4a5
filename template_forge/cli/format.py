"""``tforge formats``, ``render``, ``compile`` and ``check``: the format stage's commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from template_forge.cli.options import parse_vars, variable_options
from template_forge.data.conversations import read_record
from template_forge.errors import TemplateForgeError
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import Rendered, render
from template_forge.format.spec import load_builtin, load_spec
from template_forge.io import install_chat_template, write_atomic

if TYPE_CHECKING:
    from template_forge.format.check import TemplateInfo

# Colours of `tforge render`, one per segment kind the renderer writes
# (render.SEGMENT_KINDS): what is trained is green, the rest is muted by role.
STYLES = {
    "bos": {"fg": "bright_black"},
    "system": {"fg": "magenta"},
    "tools": {"fg": "bright_magenta"},
    "user": {"fg": "cyan"},
    "assistant_prefix": {"fg": "yellow", "dim": True},
    "assistant_reasoning": {"fg": "green", "italic": True},
    "assistant_content": {"fg": "green", "bold": True},
    "assistant_calls": {"fg": "bright_green", "bold": True},
    "assistant_suffix": {"fg": "green", "bold": True, "underline": True},
    "assistant_end": {"fg": "green", "dim": True},
    "tool": {"fg": "blue"},
    "generation_prompt": {"fg": "yellow"},
    "final_suffix": {"fg": "bright_black"},
}


@click.command("formats")
def formats_cmd() -> None:
    """List the built-in formats, one line each."""
    names = builtin_names()
    width = max(len(n) for n in names)
    for name in names:
        spec = load_builtin(name)
        models = spec.models[0] + (f" (+{len(spec.models) - 1})" if len(spec.models) > 1 else "") if spec.models else "-"
        click.echo(f"{name:<{width}}  {models:<45}  {spec.description}")


@click.command("compile")
@click.argument("spec")
@click.option("--training", is_flag=True, help="Add {% generation %} spans for return_assistant_tokens_mask.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the template to this file.")
@click.option("--tokenizer-dir", type=click.Path(file_okay=False),
              help="Write chat_template.jinja and set chat_template in tokenizer_config.json here.")
def compile_cmd(spec: str, training: bool, output: str | None, tokenizer_dir: str | None) -> None:
    """Compile SPEC (a YAML file or a built-in name) to a Hugging Face chat template.

    Prints the template unless -o or --tokenizer-dir is given.
    """
    template = compile_template(load_spec(spec), training=training)
    if output:
        write_atomic(output, template)
        click.echo(f"wrote {output}", err=True)
    if tokenizer_dir:
        jinja_path, config_path = install_chat_template(tokenizer_dir, template)
        click.echo(f"wrote {jinja_path} and set chat_template in {config_path}", err=True)
    if not output and not tokenizer_dir:
        click.echo(template)


def _styled(rendered: Rendered) -> str:
    return "".join(click.style(rendered.text[s.start : s.end], **STYLES[s.kind]) for s in rendered.segments)


@click.command("render")
@click.argument("spec")
@click.argument("conversation")
@click.option("--generation-prompt", is_flag=True, help="Append the generation prompt (trailing_assistant).")
@click.option("--plain", is_flag=True, help="No colours, even in a terminal.")
@click.option("--color", "force_color", is_flag=True, help="Colours even when not writing to a terminal.")
@variable_options
def render_cmd(spec: str, conversation: str, generation_prompt: bool, plain: bool, force_color: bool,
               variables: tuple[str, ...], now: datetime | None) -> None:
    """Render CONVERSATION with SPEC: a JSON file (a list of messages, or {"messages": [...],
    "tools": [...]}), or - for stdin.

    \b
    In a terminal, each kind of segment has its colour:
      bos, final_suffix             grey
      system                        magenta     tools (definitions)   bright magenta
      user                          cyan        tool (tool results)   blue
      assistant_prefix (header)     dim yellow  generation_prompt     yellow
      assistant_reasoning           green italic (trained)
      assistant_content             bold green (trained)
      assistant_calls (tool calls)  bold bright green (trained)
      assistant_suffix              bold green underlined (trained: the end-of-turn token)
      assistant_end                 dim green (the rest of the suffix, not trained)
    """
    fmt = load_spec(spec)
    messages, tools = read_record(conversation)
    rendered = render(fmt, messages, add_generation_prompt=generation_prompt, variables=parse_vars(variables),
                      tools=tools or None, now=now)
    if plain:
        click.echo(rendered.text, nl=False, color=False)
    else:
        click.echo(_styled(rendered), nl=False, color=True if force_color else None)
    if sys.stdout.isatty():
        click.echo()


class CannotCheck(click.ClickException):
    """A check that cannot run at all (unknown spec, unreadable or invalid template, bad
    --var): a usage error, exit 2, not "the formats differ" (exit 1)."""

    exit_code = 2


@contextmanager
def _cannot_check(prefix: str = "") -> Iterator[None]:
    try:
        yield
    except TemplateForgeError as exc:
        raise CannotCheck(prefix + str(exc)) from None


def _warn_missing_tokens(template: str, info: TemplateInfo, tokens: dict[str, str]) -> None:
    folder = os.path.isdir(template)
    for key in info.missing_tokens(tokens):
        option = "--" + key.replace("_", "-")
        why = f"{template}/tokenizer_config.json has no `{key}`" if folder else f"no {key} string was given"
        where = "" if folder else " (a tokenizer folder gives it from tokenizer_config.json)"
        click.echo(f"warning: the template reads `{key}`, but {why}, so it renders as empty (and raises where "
                   f"the template adds it to text). Pass {option}{where}.", err=True)


def _template_where(template: str) -> str:
    return template if os.path.isfile(template) else f"{template} (chat template)"


def _prepare_check(spec: str, template: str, template_name: str, tokens_given: dict[str, str | None],
                   values: dict, now: datetime | None):
    """Everything a check needs before sampling, each failure a usage error (exit 2)."""
    from template_forge.format.check import inspect_template, load_template  # only `check` loads the sandbox

    with _cannot_check():
        fmt = load_spec(spec)
        text, tokens = load_template(template, name=template_name)
        info = inspect_template(text, where=_template_where(template))
    tokens.update({k: v for k, v in tokens_given.items() if v is not None})
    with _cannot_check("--var: "):
        render(fmt, [], variables=values, now=now)  # the spec takes these variables, typed so
    _warn_missing_tokens(template, info, tokens)
    return fmt, text, tokens


@click.command("check")
@click.argument("spec")
@click.argument("template")
@click.option("--samples", default=200, show_default=True, type=click.IntRange(min=1), help="Sample conversations (each with and without the generation prompt).")
@click.option("--seed", default=0, show_default=True, help="Picks the samples.")
@click.option("--bos-token", help="bos_token for the template (default: from tokenizer_config.json).")
@click.option("--eos-token", help="eos_token for the template (default: from tokenizer_config.json).")
@click.option("--template-name", default="default", show_default=True, help="Which of several named chat templates.")
@variable_options
@click.option("--show", default=3, show_default=True, help="How many differences to print.")
@click.pass_context
def check_cmd(ctx: click.Context, spec: str, template: str, samples: int, seed: int, bos_token: str | None,
              eos_token: str | None, template_name: str, variables: tuple[str, ...], now: datetime | None,
              show: int) -> None:
    """Check that SPEC renders like TEMPLATE (a .jinja file or a tokenizer folder).

    Samples plain conversations and, when the spec or the template handles them, tool
    definitions, tool calls and results, and reasoning. --var values and the clock (--now,
    else the time the check starts) are the same on both sides.

    The template runs in a sandbox worker: each render may take 10 s, all of them 120 s, and
    1 GiB of memory; whatever a render raises counts as the template refusing that sample.

    Exits 0 when every sample renders identically (or both refuse it), 1 when they differ,
    2 when the check cannot run (unknown spec, unreadable or invalid template, bad --var, a
    template past the sandbox's limits).
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" banner
    values = parse_vars(variables)
    given = {"bos_token": bos_token, "eos_token": eos_token}
    fmt, text, tokens = _prepare_check(spec, template, template_name, given, values, now)
    with _cannot_check():  # a template that runs past the limits or kills its sandbox (sandbox.py)
        from template_forge.format.check import check_template

        report = check_template(fmt, text, samples=samples, seed=seed, tokens=tokens, variables=values, now=now,
                                where=_template_where(template))
    summary = f"{spec} vs {template}: {report.summary()}."
    if report.ok:
        click.echo(summary + " Same format.")
        return
    click.echo(summary)
    for mismatch in report.examples(show):
        click.echo("- " + mismatch.describe())
    ctx.exit(1)
