"""The ``tforge`` command line. Thin: parse options, call the library, print.

Library errors (:class:`TemplateForgeError`) become ``Error: …`` and exit status 1 in
one place (:class:`_Group`); usage errors stay click's (exit 2); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from template_forge.cli.packs import load_encoder, pack_cmd, prepare_cmd, progress_bar, stats_cmd, tokenize_options
from template_forge.cli.train import merge_cmd, plot_cmd, train_cmd
from template_forge.errors import DataError, TemplateForgeError
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
}


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TemplateForgeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(package_name="template-forge")
def main() -> None:
    """template_forge: prompt formats as a spec, compiled to exact chat templates."""


@main.command("compile")
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


def _read_conversation(source: str) -> list:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: cannot read the conversation ({exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg}).") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a list of messages or an object with `messages`, found {type(data).__name__}.")
    return data


def _parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected NAME=VALUE, found {pair!r}", param_hint="--var")
        key, value = pair.split("=", 1)
        out[key] = value
    return out


def _styled(rendered: Rendered) -> str:
    return "".join(click.style(rendered.text[s.start : s.end], **STYLES[s.kind]) for s in rendered.segments)


@main.command("render")
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
    rendered = render(fmt, _read_conversation(conversation), add_generation_prompt=generation_prompt,
                      variables=_parse_vars(variables))
    if plain:
        click.echo(rendered.text, nl=False, color=False)
    else:
        click.echo(_styled(rendered), nl=False, color=True if force_color else None)
    if sys.stdout.isatty():
        click.echo()


@main.command("check")
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
    report = check_template(fmt, text, samples=samples, seed=seed, tokens=tokens, variables=_parse_vars(variables))
    summary = (f"{spec} vs {template}: {report.renders} renders, {report.identical} identical, "
               f"{report.both_refuse} refused by both, {len(report.mismatches)} different.")
    if report.ok:
        click.echo(summary + " Same format.")
        return
    click.echo(summary)
    for mismatch in report.mismatches[:show]:
        click.echo("- " + mismatch.describe())
    ctx.exit(1)


def _tokenizer_arg(value: str):
    from template_forge.tokens.encoder import Vocab

    return Vocab(value)


@main.command("tokenize")
@click.argument("data", type=click.Path(dir_okay=False))
@tokenize_options
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder (created whole, atomically).")
@click.option("--max-length", type=click.IntRange(min=1), help="Conversations with more tokens are dropped or truncated (--overlong).")
@click.option("--overlong", type=click.Choice(["drop", "truncate"]), default="drop", show_default=True,
              help="What happens to conversations over --max-length.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def tokenize_cmd(data: str, fmt: str, tokenizer: str, output: str, max_length: int | None, overlong: str,
                 on_error: str, workers: int | None, policy: str, parse_special: bool, overwrite: bool,
                 quiet: bool) -> None:
    """Tokenize DATA (JSONL, one {"messages": [...]} per line) into Arrow shards with loss masks.

    Writes OUTPUT/shard-NNNNN.arrow (columns input_ids, loss_mask, num_tokens, num_trained,
    line) and OUTPUT/manifest.json (counts, token totals, hashes of spec, tokenizer and data).
    """
    from template_forge.data.prepare import describe_skips, tokenize_file

    spec, encoder = load_encoder(fmt, tokenizer, policy, parse_special)
    size = os.path.getsize(data) if os.path.isfile(data) else 0
    with progress_bar(size, f"tokenizing {os.path.basename(data)}", quiet) as bar:
        report = tokenize_file(data, spec, encoder, output, spec_name=fmt, max_length=max_length, overlong=overlong,
                               on_error=on_error, workers=workers, overwrite=overwrite, progress=bar.update,
                               tokenizer_path=os.path.abspath(tokenizer))
    share = f" ({report.trained_tokens / report.tokens:.1%} trained)" if report.tokens else ""
    click.echo(f"{report.written} conversations, {report.tokens} tokens, {report.trained_tokens} trained{share} "
               f"→ {output} [{encoder.engine} engine]", err=True)
    if report.truncated:
        click.echo(f"{report.truncated} conversations truncated to {max_length} tokens", err=True)
    if report.skipped:
        click.echo(f"skipped {sum(report.skipped.values())} of {report.lines} lines:", err=True)
        for line in describe_skips(report):
            click.echo(line, err=True)


@main.command("inspect")
@click.argument("source", type=click.Path(exists=True))
@click.option("--row", default=0, show_default=True, help="Row of a tokenize output folder.")
@click.option("--line", "line_no", type=click.IntRange(min=1), help="Line of a JSONL conversation file.")
@click.option("--format", "-f", "fmt", help="Prompt format (for a conversation file).")
@click.option("--tokenizer", "-t", type=click.Path(), help="Tokenizer (default for a folder: the one it was made with).")
@click.option("--policy", type=click.Choice(["assistant", "last_assistant", "causal_lm"]), default="assistant",
              show_default=True, help="Loss policy (for a conversation file).")
@click.option("--table", "as_table", is_flag=True, help="One line per token: position, id, trained, text.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the view as an HTML page.")
@click.option("--color", "force_color", is_flag=True, help="Colours even when not writing to a terminal.")
def inspect_cmd(source: str, row: int, line_no: int | None, fmt: str | None, tokenizer: str | None, policy: str,
                as_table: bool, html_path: str | None, force_color: bool) -> None:
    """Show the tokens of one conversation, trained ones highlighted.

    SOURCE is a `tforge tokenize` or `tforge pack` output folder (pick a row, or a pack,
    with --row) or a conversation file: JSON messages, or JSONL with --line (then --format and --tokenizer are needed).
    """
    from template_forge.tokens import view
    from template_forge.tokens.encoder import Encoder

    if os.path.isdir(source):
        from template_forge.data.packed import FORMAT as PACKED
        from template_forge.data.packed import PackedDataset, read_manifest
        from template_forge.data.tokenized import TokenizedDataset

        packed = read_manifest(source).get("format") == PACKED
        ds = PackedDataset(source) if packed else TokenizedDataset(source)
        if not -len(ds) <= row < len(ds):
            span = f"{len(ds)} rows (0 to {len(ds) - 1})" if len(ds) else "no rows"
            raise DataError(f"{source} has {span}; --row {row} is out of range.")
        tok_path = tokenizer or ds.manifest.get("tokenizer", {}).get("path")
        if not tok_path:
            raise DataError(f"{source}: the manifest does not name its tokenizer; pass --tokenizer.")
        vocab = _tokenizer_arg(tok_path)
        made_with = ds.manifest.get("tokenizer", {}).get("sha256")
        if made_with and vocab.sha256 != made_with:
            click.echo(f"warning: {tok_path} is not the tokenizer these shards were made with; "
                       "token texts may be wrong.", err=True)
        if packed:
            return _inspect_pack(ds, row, vocab, as_table, force_color)
        encoded = ds[row]
        title = f"{source} row {row} (line {ds.line(row)})"
    else:
        if not fmt or not tokenizer:
            raise click.UsageError("a conversation file needs --format and --tokenizer")
        messages = _read_messages(source, line_no)
        vocab = _tokenizer_arg(tokenizer)
        encoded = Encoder(load_spec(fmt), vocab, policy=policy).encode(messages)
        title = f"{source}" + (f":{line_no or 1}" if source.endswith(".jsonl") or line_no else "")
    views = view.token_views(encoded, vocab)
    summary = f"{encoded.num_tokens} tokens, {encoded.num_trained} trained"
    if as_table:
        click.echo(view.table(views))
    else:
        click.echo(view.terminal(views), color=True if force_color else None)
    click.echo(f"{title}: {summary}", err=True)
    if html_path:
        write_atomic(html_path, view.page(views, title=title, summary=summary))
        click.echo(f"wrote {html_path}", err=True)


def _inspect_pack(ds, row: int, vocab, as_table: bool, force_color: bool) -> None:
    """Each sample of pack ``row`` on its own, with where it came from."""
    from template_forge.tokens import view
    from template_forge.tokens.encoder import Encoded

    pack = ds[row]
    lines, starts = ds.sources(row)
    for k, ((ids, mask), line, start) in enumerate(zip(pack.samples(), lines, starts)):
        piece = f", from token {start}" if start else ""
        click.echo(click.style(f"── sample {k}: line {line}{piece}, {len(ids)} tokens, {int(mask.sum())} trained ──",
                               bold=True), color=True if force_color else None)
        views = view.token_views(Encoded(ids, mask), vocab)
        click.echo(view.table(views) if as_table else view.terminal(views), color=True if force_color else None)
    click.echo(f"{ds.folder} pack {row}: {pack.num_tokens} of {ds.context_length} tokens, "
               f"{len(pack.seq_lengths)} samples, {pack.num_trained} trained "
               "(the first token of each sample is never a label)", err=True)


def _read_messages(source: str, line_no: int | None) -> list:
    if line_no is None and source.endswith(".jsonl"):
        line_no = 1  # a JSONL file: its first conversation unless --line says otherwise
    if line_no is None:
        return _read_conversation(source)
    from template_forge.data.conversations import BadLine, parse_line

    with open(source, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if number == line_no:
                parsed = parse_line(raw.rstrip(b"\r\n"), path=source, line=number, need_assistant=False)
                if isinstance(parsed, BadLine):
                    raise parsed.error()
                return parsed
    raise DataError(f"{source} has fewer than {line_no} lines.")


@main.command("convert-tokenizer")
@click.argument("vocab_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder to write (save_pretrained layout).")
@click.option("--kind", type=click.Choice(["auto", "tiktoken", "sentencepiece"]), default="auto", show_default=True)
def convert_tokenizer_cmd(vocab_file: str, output: str, kind: str) -> None:
    """Build a Hugging Face fast tokenizer from a vendor VOCAB_FILE, offline.

    tiktoken files (Llama 3's tokenizer.model from llama-models) get Llama 3's 256 special
    tokens; SentencePiece BPE models (Mistral's, from mistral-common) keep their control
    tokens and encode exactly like SentencePiece (merges ranked by score, legacy=False).
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from template_forge.tokens import convert

    if kind == "auto":
        with open(vocab_file, "rb") as fh:
            head = fh.read(64)
        kind = "tiktoken" if head[:1].isalnum() and b" " in head.split(b"\n")[0] else "sentencepiece"
    tok = convert.from_tiktoken(vocab_file) if kind == "tiktoken" else convert.from_sentencepiece(vocab_file)
    convert.save(tok, output)
    click.echo(f"wrote {output} ({kind}, {len(tok)} tokens)", err=True)


@main.command("formats")
def formats_cmd() -> None:
    """List the built-in formats, one line each."""
    names = builtin_names()
    width = max(len(n) for n in names)
    for name in names:
        spec = load_builtin(name)
        models = spec.models[0] + (f" (+{len(spec.models) - 1})" if len(spec.models) > 1 else "") if spec.models else "-"
        click.echo(f"{name:<{width}}  {models:<45}  {spec.description}")


for _command in (pack_cmd, prepare_cmd, stats_cmd, train_cmd, plot_cmd, merge_cmd):
    main.add_command(_command)

