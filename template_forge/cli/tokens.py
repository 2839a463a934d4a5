"""``tforge convert-tokenizer``, ``tokenize`` and ``inspect``: tokens and loss masks.

Everything that loads numpy or tokenizers is imported inside the commands, so that
``import template_forge.cli`` stays light.
"""

from __future__ import annotations

import os

import click

from template_forge.cli.options import load_encoder, progress_bar, say, tokenize_options, wait_option
from template_forge.errors import DataError
from template_forge.io import write_atomic


@click.command("convert-tokenizer")
@click.argument("vocab_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder to write (save_pretrained layout; created whole, atomically).")
@click.option("--kind", type=click.Choice(["auto", "tiktoken", "sentencepiece", "tekken"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def convert_tokenizer_cmd(vocab_file: str, output: str, kind: str, overwrite: bool) -> None:
    """Build a Hugging Face fast tokenizer from a vendor VOCAB_FILE, offline.

    tiktoken files (Llama 3's tokenizer.model from llama-models) get Llama 3's 256 special
    tokens, Llama 4's (told apart by its 200000 tokens) Llama 4's 2048 and regex; SentencePiece BPE models (Mistral's, from mistral-common) keep their control
    tokens and encode exactly like SentencePiece (merges ranked by score, legacy=False);
    Tekken JSON files (Mistral Nemo / Small 3) keep their special tokens at ids 0..N-1.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from template_forge.tokens import convert

    tok, kind = convert.from_vendor_file(vocab_file, kind=kind)
    convert.write_folder(tok, output, overwrite=overwrite)
    click.echo(f"wrote {output} ({kind}, {len(tok)} tokens)", err=True)


@click.command("tokenize")
@click.argument("data", type=click.Path(dir_okay=False))
@tokenize_options
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder (created whole, atomically).")
@click.option("--max-length", type=click.IntRange(min=1), help="Conversations with more tokens are dropped or truncated (--overlong).")
@click.option("--overlong", type=click.Choice(["drop", "truncate"]), default="drop", show_default=True,
              help="What happens to conversations over --max-length.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@wait_option
def tokenize_cmd(data: str, fmt: str, tokenizer: str, output: str, max_length: int | None, overlong: str,
                 on_error: str, workers: int | None, policy: str, parse_special: bool, overwrite: bool,
                 wait: bool, quiet: bool) -> None:
    """Tokenize DATA (JSONL, one {"messages": [...]} per line) into Arrow shards with loss masks.

    Writes OUTPUT/shard-NNNNN.arrow (columns input_ids, loss_mask, num_tokens, num_trained,
    line) and OUTPUT/manifest.json (counts, token totals, hashes of spec, tokenizer and data).
    """
    from template_forge.data.prepare import describe_skips, tokenize_file

    encoder = load_encoder(fmt, tokenizer, policy, parse_special)
    size = os.path.getsize(data) if os.path.isfile(data) else 0
    with progress_bar(size, f"tokenizing {os.path.basename(data)}", quiet) as bar:
        report = tokenize_file(data, encoder, output, spec_name=fmt, max_length=max_length, overlong=overlong,
                               on_error=on_error, workers=workers, overwrite=overwrite, progress=bar.update,
                               wait=wait, on_wait=say)
    share = f" ({report.trained_tokens / report.tokens:.1%} trained)" if report.tokens else ""
    click.echo(f"{report.written} conversations, {report.tokens} tokens, {report.trained_tokens} trained{share} "
               f"→ {output} [{encoder.engine} engine]", err=True)
    if report.truncated:
        click.echo(f"{report.truncated} conversations truncated to {max_length} tokens", err=True)
    if report.skipped:
        click.echo(f"skipped {sum(report.skipped.values())} of {report.lines} lines:", err=True)
        for line in describe_skips(report):
            click.echo(line, err=True)


@click.command("inspect")
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

    For a conversation file, tool definitions (magenta), tool results (blue), reasoning
    (cyan) and tool calls (yellow) have their own colours (underlined where trained), and
    --table gets a kind column.

    SOURCE is a `tforge tokenize` or `tforge pack` output folder (pick a row, or a pack,
    with --row) or a conversation file: JSON messages, or JSONL with --line (then --format and --tokenizer are needed).
    """
    from template_forge.data.packed import PackedDataset
    from template_forge.tokens import view

    if os.path.isdir(source):
        ds, vocab = _open_row(source, row, tokenizer)
        if isinstance(ds, PackedDataset):  # a pack: shown sample by sample
            return _inspect_pack(ds, row, vocab, as_table, force_color)
        encoded, title, rendered = ds[row], f"{source} row {row} (line {ds.line(row)})", None
    else:
        if not fmt or not tokenizer:
            raise click.UsageError("a conversation file needs --format and --tokenizer")
        encoded, vocab, title, rendered = _file_conversation(source, line_no, fmt, tokenizer, policy)
    views = view.token_views(encoded, vocab, rendered)
    summary = f"{encoded.num_tokens} tokens, {encoded.num_trained} trained"
    if as_table:
        click.echo(view.table(views))
    else:
        click.echo(view.terminal(views), color=True if force_color else None)
    click.echo(f"{title}: {summary}", err=True)
    if html_path:
        write_atomic(html_path, view.page(views, title=title, summary=summary))
        click.echo(f"wrote {html_path}", err=True)


def _open_row(source: str, row: int, tokenizer: str | None):
    """The dataset in folder ``source``, checked to have ``row``, and the tokenizer to show it with."""
    from template_forge.data.packed import open_folder
    from template_forge.tokens.vocab import Vocab

    ds = open_folder(source)
    if not -len(ds) <= row < len(ds):
        span = f"{len(ds)} rows (0 to {len(ds) - 1})" if len(ds) else "no rows"
        raise DataError(f"{source} has {span}; --row {row} is out of range.")
    tok_path = tokenizer or ds.manifest.get("tokenizer", {}).get("path")
    if not tok_path:
        raise DataError(f"{source}: the manifest does not name its tokenizer; pass --tokenizer.")
    vocab = Vocab(tok_path)
    made_with = ds.manifest.get("tokenizer", {}).get("sha256")
    if made_with and vocab.sha256 != made_with:
        click.echo(f"warning: {tok_path} is not the tokenizer these shards were made with; "
                   "token texts may be wrong.", err=True)
    return ds, vocab


def _file_conversation(source: str, line_no: int | None, fmt: str, tokenizer: str, policy: str):
    """``(encoded, vocab, title, rendered)`` of a conversation in a JSON or JSONL file."""
    from template_forge.data.conversations import read_record
    from template_forge.format.spec import load_spec
    from template_forge.tokens.encoder import Encoder
    from template_forge.tokens.vocab import Vocab

    messages, tools = read_record(source, line=line_no)
    vocab = Vocab(tokenizer)
    encoder = Encoder(load_spec(fmt), vocab, policy=policy)
    record = {"messages": messages, "tools": tools}
    encoded = encoder.encode(record)
    title = f"{source}" + (f":{line_no or 1}" if source.endswith(".jsonl") or line_no else "")
    return encoded, vocab, title, encoder.render(record)


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
