"""``tforge formats``, ``render``, ``compile`` and ``check``: the format stage's commands."""

from __future__ import annotations

import os
import sys

import click

from template_forge.cli.options import parse_vars
from template_forge.data.conversations import read_conversation
from template_forge.format.check import check_template, load_template
from template_forge.format.compiler import compile_template
from template_forge.format.formats import builtin_names
from template_forge.format.render import Rendered, render
from template_forge.format.spec import load_builtin, load_spec
from template_forge.io import install_chat_template, write_atomic

# Colours of `tforge render`: what is trained stands out, the rest is muted by role.
STYLES = {
    "bos": dict(fg="bright_black"),
    "system": dict(fg="magenta"),
    "user": dict(fg="cyan"),
    "assistant_prefix": dict(fg="yellow", dim=True),
    "assistant_content": dict(fg="green", bold=True),
    "assistant_suffix": dict(fg="green", bold=True, underline=True),
    "generation_prompt": dict(fg="yellow"),
    "final_suffix": dict(fg="bright_black"),
    # the agentic kinds (render.SEGMENT_KINDS): without them `tforge render` raised KeyError
    "tools": {"fg": "magenta", "dim": True},
    "assistant_reasoning": {"fg": "green"},
    "assistant_calls": {"fg": "green", "bold": True},
    "assistant_end": {"fg": "bright_black"},
    "tool": {"fg": "blue"},
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
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a template variable.")
def render_cmd(spec: str, conversation: str, generation_prompt: bool, plain: bool, force_color: bool,
               variables: tuple[str, ...]) -> None:
    """Render CONVERSATION (JSON messages file, or - for stdin) with SPEC.

    In a terminal, segments are coloured: system magenta, user cyan, assistant header
    yellow, trained assistant text green (the end-of-turn suffix underlined).
    """
    fmt = load_spec(spec)
    rendered = render(fmt, read_conversation(conversation), add_generation_prompt=generation_prompt,
                      variables=parse_vars(variables))
    if plain:
        click.echo(rendered.text, nl=False, color=False)
    else:
        click.echo(_styled(rendered), nl=False, color=True if force_color else None)
    if sys.stdout.isatty():
        click.echo()


@click.command("check")
@click.argument("spec")
@click.argument("template")
@click.option("--samples", default=200, show_default=True, help="Sample conversations (each with and without the generation prompt).")
@click.option("--seed", default=0, show_default=True, help="Picks the samples.")
@click.option("--bos-token", help="bos_token for the template (default: from tokenizer_config.json).")
@click.option("--eos-token", help="eos_token for the template (default: from tokenizer_config.json).")
@click.option("--template-name", default="default", show_default=True, help="Which of several named chat templates.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a template variable on both sides.")
@click.option("--show", default=3, show_default=True, help="How many differences to print.")
@click.pass_context
def check_cmd(ctx: click.Context, spec: str, template: str, samples: int, seed: int, bos_token: str | None,
              eos_token: str | None, template_name: str, variables: tuple[str, ...], show: int) -> None:
    """Check that SPEC renders like TEMPLATE (a .jinja file or a tokenizer folder).

    Exits 0 when every sample renders identically (or both refuse it), 1 otherwise.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" banner
    fmt = load_spec(spec)
    text, tokens = load_template(template, name=template_name)
    tokens.update({k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None})
    report = check_template(fmt, text, samples=samples, seed=seed, tokens=tokens, variables=parse_vars(variables))
    summary = (f"{spec} vs {template}: {report.renders} renders, {report.identical} identical, "
               f"{report.both_refuse} refused by both, {len(report.mismatches)} different.")
    if report.ok:
        click.echo(summary + " Same format.")
        return
    click.echo(summary)
    for mismatch in report.mismatches[:show]:
        click.echo("- " + mismatch.describe())
    ctx.exit(1)
