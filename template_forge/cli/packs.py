"""``tforge pack``, ``tforge prepare`` and ``tforge stats``: the packing half of the CLI.

Registered on the ``tforge`` group by :mod:`template_forge.cli`; errors are turned into
``Error: …`` there.
"""

from __future__ import annotations

import os

import click

from template_forge.cli.options import (
    _PackBar,
    load_encoder,
    pack_options,
    progress_bar,
    say,
    tokenize_options,
    wait_option,
)
from template_forge.errors import DataError
from template_forge.io import write_atomic


@click.command("pack")
@click.argument("tokenized", type=click.Path(exists=True, file_okay=False))
@pack_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@wait_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def pack_cmd(tokenized: str, context_length: int, output: str, overflow: str, seed: int, overwrite: bool,
             wait: bool, quiet: bool) -> None:
    """Pack a `tforge tokenize` folder TOKENIZED into sequences of --context-length tokens.

    Best-fit decreasing over the whole dataset. Writes OUTPUT/shard-NNNNN.arrow (input_ids,
    loss_mask, seq_lengths, num_tokens, source_lines, source_starts) and OUTPUT/manifest.json. An
    interrupted run resumes when the same command is run again. OUTPUT is up to date (and
    reused) only if its shards match the sizes and sha256 of its manifest.
    """
    from template_forge.data.packed import pack_tokenized

    with _PackBar(f"packing {os.path.basename(os.path.normpath(tokenized))}", quiet) as bar:
        manifest = pack_tokenized(tokenized, output, context_length=context_length, overflow=overflow, seed=seed,
                                  overwrite=overwrite, progress=bar.update, wait=wait, on_wait=say)
    if manifest.get("reused"):
        click.echo(f"{output} is up to date (same tokenized rows and options); reusing it.", err=True)
    _rebuilt(manifest, output)
    click.echo(_summary(manifest, output), err=True)


def _rebuilt(manifest: dict, output: str) -> None:
    if manifest.get("rebuilt"):
        click.echo(f"warning: {output} was made from the same inputs, but {manifest['rebuilt']}; made it again.",
                   err=True)


@click.command("prepare")
@click.argument("data", type=click.Path(dir_okay=False))
@tokenize_options
@pack_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder made from other inputs.")
@wait_option
def prepare_cmd(data: str, fmt: str, tokenizer: str, context_length: int, output: str, overflow: str, seed: int,
                on_error: str, policy: str, parse_special: bool, workers: int | None, overwrite: bool,
                wait: bool, quiet: bool) -> None:
    """Tokenize and pack DATA (JSONL, one {"messages": [...]} per line) in one command.

    If OUTPUT already holds this preparation (same data, format, tokenizer and options, by
    sha256, and every shard of the size and sha256 its manifest records), it is reused as it is.
    """
    from template_forge.data.prepare import prepare_file

    encoder = load_encoder(fmt, tokenizer, policy, parse_special)
    size = os.path.getsize(data) if os.path.isfile(data) else 0
    with progress_bar(size, f"tokenizing {os.path.basename(data)}", quiet) as read_bar, \
            _PackBar("packing", quiet, before=lambda: read_bar.update(size - read_bar.pos)) as pack_bar:
        manifest, reused = prepare_file(data, encoder, output, context_length=context_length, overflow=overflow,
                                        seed=seed, spec_name=fmt, on_error=on_error, workers=workers,
                                        overwrite=overwrite, on_tokenize=read_bar.update, on_pack=pack_bar.update,
                                        wait=wait, on_wait=say)
    if reused:
        click.echo(f"{output} is up to date (same data, format, tokenizer and options); reusing it.", err=True)
    _rebuilt(manifest, output)
    counts = manifest.get("tokenize", {}).get("counts", {})
    if counts.get("skipped_total"):
        click.echo(f"skipped {counts['skipped_total']} of {counts['lines']} lines: "
                   + ", ".join(f"{n} {reason}" for reason, n in counts["skipped"].items()), err=True)
    click.echo(_summary(manifest, output), err=True)


def _summary(manifest: dict, output: str) -> str:
    s, n = manifest["stats"], manifest["packing"]["context_length"]
    if not s["packs"]:
        click.echo(f"warning: no packs: all {s['samples']} samples were dropped "
                   f"({', '.join(f'{v} {k}' for k, v in s['dropped'].items()) or 'none given'}). "
                   "Raise --context-length or use --overflow truncate|split.", err=True)
    extra = []
    if s["dropped_samples"]:
        extra.append(f"dropped {s['dropped_samples']} ({', '.join(f'{v} {k}' for k, v in s['dropped'].items())})")
    if s["truncated"]:
        extra.append(f"truncated {s['truncated']} ({s['truncated_tokens']} tokens cut)")
    if s["split"]:
        extra.append(f"split {s['split']}")
    return (f"{s['packed_samples']} samples → {s['packs']} packs of ≤{n} tokens, efficiency {s['efficiency']:.2%}"
            + (f"; {'; '.join(extra)}" if extra else "") + f" → {output}")


@click.command("stats")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--bins", default=16, show_default=True, type=click.IntRange(min=1, max=200), help="Histogram bars.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Also draw the histograms as a PNG (needs matplotlib).")
@click.option("--verify", is_flag=True, help="Recompute every shard's sha256 and compare it with the manifest.")
def stats_cmd(folder: str, bins: int, png_path: str | None, verify: bool) -> None:
    """Statistics of a `tforge tokenize` or `tforge pack` FOLDER, and length histograms."""
    import numpy as np

    from template_forge.data.packed import PackedDataset, open_folder
    from template_forge.plots import histogram, text_histogram

    ds = open_folder(folder)
    manifest = ds.manifest
    try:
        rows = _packed_rows(manifest) if isinstance(ds, PackedDataset) else _tokenized_rows(manifest)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # The shards were checked when the folder opened; these fields are only for show.
        raise DataError(f"{folder}/manifest.json: its statistics are not what tforge writes ({type(exc).__name__}: "
                        f"{str(exc)[:80]}); it was edited or made by another tool. Make the folder again.") from None
    if isinstance(ds, PackedDataset):
        hists = {"sample length (tokens)": (ds.seq_lengths, ds.context_length),
                 "pack fill (tokens)": (ds.num_tokens, ds.context_length)}
    else:
        lengths = ds.num_tokens
        # The longest few would squeeze every other bar into the first one: the last bar holds them.
        hists = {"conversation length (tokens)": (lengths, int(np.percentile(lengths, 99.5)) if lengths.size else 1)}
    if verify:
        _verify(folder, manifest)
    width = max(len(k) for k, _ in rows)
    click.echo(f"{folder}  ({manifest.get('format')})")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    for title, (values, hi) in hists.items():
        click.echo("")
        click.echo(text_histogram(title, values, hi, bins))
    if png_path:
        from template_forge.plots import histograms_png

        write_atomic(png_path, histograms_png({t: histogram(v, h, bins) for t, (v, h) in hists.items()},
                                              title=os.path.basename(os.path.normpath(folder))))
        click.echo(f"wrote {png_path}", err=True)


def _verify(folder: str, manifest: dict) -> None:
    from template_forge.data.provenance import verify_shards

    click.echo(f"verified: {verify_shards(folder, manifest)} shards match the manifest's sha256", err=True)


def _packed_rows(m: dict) -> list[tuple[str, str]]:
    s, p = m["stats"], m["packing"]
    trained = f"{s['trained_tokens']:,}" + (f"  ({s['trained_tokens'] / s['tokens']:.1%} of tokens)" if s["tokens"] else "")
    return [
        ("context length", f"{p['context_length']:,}  (overflow {p['overflow']}, seed {p['seed']}, {p['strategy']})"),
        ("samples", f"{s['samples']:,}  (packed {s['packed_samples']:,} as {s['pieces']:,} pieces)"),
        ("dropped", f"{s['dropped_samples']:,}  ({s['dropped_tokens']:,} tokens"
                    + "".join(f"; {v} {k}" for k, v in s["dropped"].items()) + ")"),
        ("truncated", f"{s['truncated']:,}  ({s['truncated_tokens']:,} tokens cut)"),
        ("split", f"{s['split']:,}"),
        ("packs", f"{s['packs']:,}  ({s['samples_per_pack']} samples per pack)"),
        ("tokens", f"{s['tokens']:,}  of {s['capacity']:,} capacity"),
        ("padding", f"{s['padding']:,}"),
        ("efficiency", f"{s['efficiency']:.3%}" if s["packs"] else "-  (no packs)"),
        ("trained tokens", trained),
        ("label tokens", f"{s.get('label_tokens', 0):,}  (trained, less the first token of each sample)"),
        ("shards", _shards(m)),
        *_provenance(m),
    ]


def _shards(m: dict) -> str:
    size = sum(x["bytes"] for x in m["shards"])
    human = f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size / 1e3:,.1f} kB"
    return f"{len(m['shards'])}  ({human})"


def _tokenized_rows(m: dict) -> list[tuple[str, str]]:
    c, t = m["counts"], m["tokens"]
    per = t.get("per_conversation", {})
    return [
        ("conversations", f"{c['written']:,}  of {c['lines']:,} lines ({c['skipped_total']:,} skipped, "
                          f"{c['truncated']:,} truncated)"),
        ("tokens", f"{t['total']:,}"),
        ("trained tokens", f"{t['trained']:,}" + (f"  ({t['trained'] / t['total']:.1%})" if t["total"] else "")),
        ("length", "  ".join(f"{k} {v:,}" for k, v in per.items())),
        ("shards", _shards(m)),
        *_provenance(m),
    ]


def _provenance(m: dict) -> list[tuple[str, str]]:
    return [
        ("source", f"{m.get('source', {}).get('path', '?')}  sha256 {m.get('source', {}).get('sha256', '?')[:12]}"),
        ("format", f"{m.get('spec', {}).get('name', '?')}  sha256 {m.get('spec', {}).get('sha256', '?')[:12]}"),
        ("tokenizer", f"{m.get('tokenizer', {}).get('path', '?')}  sha256 {m.get('tokenizer', {}).get('sha256', '?')[:12]}"),
    ]
