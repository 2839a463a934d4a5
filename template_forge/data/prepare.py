"""Conversation files → training data: ``tforge tokenize`` and ``tforge prepare``.

``tokenize_file``: a JSONL conversation file → a tokenized folder (Arrow shards +
``manifest.json``). Lines are read in chunks and each chunk is parsed, validated, rendered,
tokenized and aligned by a worker process (:mod:`template_forge.parallel`); the parent writes
rows in input order. Everything is written into a temporary folder beside the output, which
is renamed into place at the end: the output folder appears whole or not at all.

``prepare_file``: a JSONL conversation file → packed Arrow shards, in one command. The file
is read once (twice when an earlier output exists: it is hashed first, to decide whether that
output is up to date): conversations are tokenized (in worker processes) into a hidden
``.NAME.tokenized/`` folder beside the output, then packed (:mod:`template_forge.data.packed`),
then the intermediate folder is removed. Only lengths are held in memory, so the input may
be larger than memory. An interrupted run is resumed by running the same command again.

The packed manifest records ``inputs``: the sha256 of the data file, of the spec and of the
tokenizer, and every option that changes the result. An output folder whose ``inputs``
equal the current ones, and whose shards match its manifest, is up to date and reused as it
is; a stale one is never reused. Both commands hold the output's lock for the whole run
(:mod:`template_forge.locks`), and clear what killed runs of the same output left beside it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from template_forge.data.conversations import REASONS, BadLine, line_too_long, parse_record, read_lines
from template_forge.data.provenance import (
    MANIFEST,
    TOKENIZED_FORMAT,
    Provenance,
    fingerprint_spec,
    first_problem,
    read_manifest,
    sha256_file,
)
from template_forge.data.tokenized import COLUMNS, ShardWriter
from template_forge.errors import DataError, RenderError
from template_forge.io import clear_stale, occupied, replace_dir, temp_dir
from template_forge.locks import output_lock
from template_forge.parallel import default_workers, ordered_map
from template_forge.tokens.encoder import Encoded, EncodeError, Encoder

OVERLONG = ("drop", "truncate")
ON_ERROR = ("stop", "skip")


@dataclass
class Report:
    """What a run did: counts by outcome, token totals, and a few examples of each problem."""

    lines: int = 0
    written: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def note(self, bad: BadLine) -> None:
        self.skipped[bad.reason] += 1
        self.examples.setdefault(bad.reason, [])
        if len(self.examples[bad.reason]) < 3:
            self.examples[bad.reason].append(str(bad))


@dataclass(frozen=True)
class Row:
    """One non-blank line as a worker hands it back: its tokens, or why it is left out."""

    line: int
    encoded: Encoded | None = None
    bad: BadLine | None = None
    truncated: bool = False


# --------------------------------------------------------------------------- the workers' part
@dataclass(frozen=True)
class _Settings:
    path: str
    alternation: bool
    need_assistant: bool
    max_length: int | None
    overlong: str


def _chunks(path: Path, lines_per_chunk: int, digest, progress: Callable[[int], None] | None) -> Iterator[tuple[int, list[bytes]]]:
    def seen(piece: bytes) -> None:
        digest.update(piece)
        if progress:
            progress(len(piece))

    with open(path, "rb") as fh:
        start, batch = 1, []
        for number, raw in enumerate(read_lines(fh, seen=seen), 1):
            batch.append(raw)
            if len(batch) >= lines_per_chunk:
                yield start, batch
                start, batch = number + 1, []
        if batch:
            yield start, batch


def _work(state: tuple[Encoder, _Settings], chunk: tuple[int, list[bytes]]) -> list[Row]:
    """Parse, check and encode one chunk of lines (blank lines are allowed and left out)."""
    encoder, st = state
    start, raws = chunk
    parsed = [(start + k, line_too_long(raw, path=st.path, line=start + k) if isinstance(raw, int) else
               _conversation(parse_record(raw.rstrip(b"\r\n"), path=st.path, line=start + k,
                                          require_alternation=st.alternation, need_assistant=st.need_assistant)))
              for k, raw in enumerate(raws) if isinstance(raw, int) or raw.strip()]
    good = [(line, messages) for line, messages in parsed if not isinstance(messages, BadLine)]
    encoded = dict(zip((line for line, _ in good), _encode(encoder, good, st.path)))
    return [Row(line, bad=result) if isinstance(result, BadLine) else _fit(encoded[line], line, st)
            for line, result in parsed]


def _conversation(parsed):
    """The messages, or the record with its tool definitions when the line has some."""
    if isinstance(parsed, BadLine):
        return parsed
    messages, tools = parsed
    return {"messages": messages, "tools": tools} if tools else messages


def _encode(encoder: Encoder, good: list[tuple[int, list[dict]]], path: str) -> list[Encoded | BadLine]:
    """Encode a chunk's conversations at once; if one cannot be rendered, one by one."""
    try:
        return encoder.encode_batch([messages for _, messages in good], workers=1) if good else []
    except (RenderError, EncodeError):
        pass
    out: list[Encoded | BadLine] = []
    for line, messages in good:  # find the culprits
        try:
            out.append(encoder.encode(messages))
        except RenderError as exc:
            what = str(exc).split(": ", 1)[-1] if exc.message_index is not None else str(exc)
            out.append(BadLine(path, line, "unrenderable", what, exc.message_index))
        except EncodeError as exc:
            out.append(BadLine(path, line, "untokenizable", str(exc)))
    return out


def _fit(result: Encoded | BadLine, line: int, st: _Settings) -> Row:
    """The row of an encoded line, after ``--max-length``: kept, truncated or too long."""
    if isinstance(result, BadLine):
        return Row(line, bad=result)
    if st.max_length is None or result.num_tokens <= st.max_length:
        return Row(line, encoded=result)
    if st.overlong == "truncate":
        cut = Encoded(result.input_ids[: st.max_length].copy(), result.loss_mask[: st.max_length].copy())
        return Row(line, encoded=cut, truncated=True)
    return Row(line, bad=BadLine(st.path, line, "too_long", (
        f"{result.num_tokens} tokens, more than --max-length {st.max_length}. "
        f"Dropped (use --overlong truncate to keep the first {st.max_length}).")))


# --------------------------------------------------------------------------- tforge tokenize
def tokenize_file(data: str | Path, encoder: Encoder, out_dir: str | Path, *, spec_name: str | None = None,
                  max_length: int | None = None, overlong: str = "drop", on_error: str = "stop",
                  workers: int | None = None, overwrite: bool = False, shard_bytes: int = 256 << 20,
                  lines_per_chunk: int = 256, progress: Callable[[int], None] | None = None,
                  wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Report:
    """Tokenize a JSONL conversation file into ``out_dir`` (Arrow shards + manifest).

    The run holds ``out_dir``'s lock (:func:`template_forge.locks.output_lock`) throughout:
    another run into ``out_dir`` raises :class:`DataError`, or is waited for with ``wait``
    (``on_wait`` is told once).

    Args:
        encoder: the format, tokenizer and loss policy (:class:`~template_forge.tokens.encoder.Encoder`).
        spec_name: how the manifest names the format (default: the spec's own name).
        on_error: ``stop`` raises :class:`DataError` at the first bad line (nothing is
            written); ``skip`` leaves bad lines out and counts them by reason.
        max_length: conversations with more tokens are dropped (``overlong="drop"``, counted
            as ``too_long`` with either ``on_error``) or cut to their first ``max_length``
            tokens (``"truncate"``, counted as truncated).
        progress: called with the number of bytes read, as the file is read.
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be one of {OVERLONG}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}")
    data, out_dir = _input_file(data), Path(out_dir)
    with output_lock(out_dir, wait=wait, on_wait=on_wait):
        if occupied(out_dir) and not overwrite:
            raise DataError(f"{out_dir} already exists. Choose another output folder or pass --overwrite.")
        return _tokenize(data, encoder, out_dir, spec_name=spec_name, max_length=max_length, overlong=overlong,
                         on_error=on_error, workers=workers, shard_bytes=shard_bytes,
                         lines_per_chunk=lines_per_chunk, progress=progress)


def _tokenize(data: Path, encoder: Encoder, out_dir: Path, *, spec_name, max_length, overlong, on_error, workers,
              shard_bytes, lines_per_chunk, progress) -> Report:
    """Write the tokenized folder through a temporary one (the caller holds the output's lock)."""
    settings = _Settings(str(data), encoder.spec.require_alternation, encoder.policy != "causal_lm", max_length,
                         overlong)
    digest = hashlib.sha256()
    tmp = temp_dir(out_dir)
    try:
        rows = ordered_map(_work, (encoder, settings), _chunks(data, lines_per_chunk, digest, progress),
                           default_workers() if workers is None else max(1, workers))
        report, shards, lengths = _write_rows(tmp, rows, on_error=on_error, shard_bytes=shard_bytes)
        provenance = _provenance(
            digest.hexdigest(), encoder, max_length=max_length, overlong=overlong, on_error=on_error,
            source_path=str(data.resolve()), spec_name=spec_name or encoder.spec.name,
            tokenizer_engine=encoder.engine, tokenizer_path=encoder.vocab.path,
            tokenizer_vocab_size=encoder.vocab.vocab_size)
        report.manifest = _manifest(provenance, encoder, report, shards, lengths)
        (tmp / MANIFEST).write_text(json.dumps(report.manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _input_file(data: str | Path) -> Path:
    data = Path(data)
    if not data.is_file():
        raise DataError(f"{data}: no such file. Pass a JSONL file with one {{\"messages\": [...]}} per line.")
    return data


def _write_rows(folder: Path, rows: Iterable[list[Row]], *, on_error: str,
                shard_bytes: int) -> tuple[Report, list[dict], list[int]]:
    """Write the workers' rows, in order, as shards in ``folder``; stop at a bad line if asked to."""
    report, lengths = Report(), []
    writer = ShardWriter(folder, shard_bytes=shard_bytes)
    with contextlib.closing(rows):  # a stop closes the worker pool at once
        for row in (row for chunk in rows for row in chunk):
            report.lines += 1
            if row.bad is not None:
                if on_error == "stop" and row.bad.reason != "too_long":  # too long: --overlong decides
                    raise row.bad.error()
                report.note(row.bad)
                continue
            report.truncated += row.truncated
            writer.add(row.encoded, row.line)
            report.written += 1
            report.tokens += row.encoded.num_tokens
            report.trained_tokens += row.encoded.num_trained
            lengths.append(row.encoded.num_tokens)
    return report, writer.close(), lengths


def _manifest(provenance: Provenance, encoder: Encoder, report: Report, shards: list[dict],
              lengths: list[int]) -> dict:
    arr = np.asarray(lengths, dtype=np.int64)
    stats = {}
    if arr.size:
        stats = {"min": int(arr.min()), "mean": round(float(arr.mean()), 1), "max": int(arr.max()),
                 **{f"p{q}": int(np.percentile(arr, q)) for q in (50, 90, 99)}}
    return {
        "format": TOKENIZED_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **provenance.manifest_entries(),
        "warnings": encoder.pairing_warnings(),
        "counts": {"lines": report.lines, "written": report.written, "truncated": report.truncated,
                   "skipped": dict(sorted(report.skipped.items())),
                   "skipped_total": sum(report.skipped.values())},
        "tokens": {"total": report.tokens, "trained": report.trained_tokens, "per_conversation": stats},
        "columns": COLUMNS,
        "shards": shards,
    }


def describe_skips(report: Report) -> list[str]:
    """Human-readable lines: count per reason and the first examples."""
    out = []
    for reason, count in report.skipped.most_common():
        out.append(f"  {count:>8}  {REASONS.get(reason, reason)}  ({reason})")
        out.extend(f"            e.g. {ex}" for ex in report.examples.get(reason, [])[:2])
    return out


# --------------------------------------------------------------------------- tforge prepare
def _provenance(source_sha256: str, encoder: Encoder, **rest) -> Provenance:
    """The record of rows made from ``source_sha256`` by ``encoder``: one place builds it, so the
    record prepare expects and the one tokenize writes cannot drift apart."""
    return Provenance(source_sha256, fingerprint_spec(encoder.spec), encoder.vocab.sha256, encoder.policy,
                      encoder.parse_special, **rest)


def expected_provenance(data: str | Path, encoder: Encoder, *, on_error: str = "stop") -> Provenance:
    """The record ``tforge prepare`` would write for its tokenized rows of ``data``
    (the whole-file sha256 costs one read of it)."""
    return _provenance(sha256_file(Path(data)), encoder, max_length=None, overlong="drop", on_error=on_error)


def prepare_file(data: str | Path, encoder: Encoder, out_dir: str | Path, *, context_length: int,
                 overflow: str = "drop", seed: int = 0, spec_name: str | None = None, on_error: str = "stop",
                 workers: int | None = None, overwrite: bool = False, shard_bytes: int = 256 << 20,
                 on_tokenize: Callable[[int], None] | None = None,
                 on_pack: Callable[[int, int], None] | None = None, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> tuple[dict, bool]:
    """Tokenize and pack ``data`` into ``out_dir``; returns ``(manifest, reused)``.

    ``reused`` is True when ``out_dir`` already held this exact preparation (same data,
    spec, tokenizer and options, by hash; every shard of the size and sha256 its manifest
    records), which is then returned untouched. A folder of the same inputs whose shards do
    not match is prepared again (the manifest says why under ``"rebuilt"``). The run holds
    ``out_dir``'s lock throughout, as :func:`tokenize_file` does.

    Args:
        on_tokenize: progress callback, bytes of input read.
        on_pack: progress callback, ``(packs just written, total packs)``.
    """
    data, out_dir = _input_file(data), Path(out_dir)
    work = out_dir.parent / f".{out_dir.name}.tokenized"
    with output_lock(out_dir, wait=wait, on_wait=on_wait):
        clear_stale(work)  # the intermediate's own temporary folders, left by a killed run
        return _prepare(data, encoder, out_dir, work, context_length=context_length, overflow=overflow, seed=seed,
                        spec_name=spec_name, on_error=on_error, workers=workers, overwrite=overwrite,
                        shard_bytes=shard_bytes, on_tokenize=on_tokenize, on_pack=on_pack)


def _prepare(data: Path, encoder: Encoder, out_dir: Path, work: Path, *, context_length, overflow, seed, spec_name,
             on_error, workers, overwrite, shard_bytes, on_tokenize, on_pack) -> tuple[dict, bool]:
    # Hashing the data costs a read of it: only when there is an earlier result to compare with.
    # Otherwise the file is read once, and tokenize_file hashes it on the way.
    from template_forge.data.packed import packed_manifest, write_packed  # not loaded by `tforge tokenize`

    expected = expected_provenance(data, encoder, on_error=on_error) if out_dir.exists() or work.exists() else None
    inputs = expected.inputs(context_length=context_length, overflow=overflow, seed=seed) if expected else None
    existing = packed_manifest(out_dir) if inputs else None
    stale = [k for k in inputs if existing.get("inputs", {}).get(k, "<absent>") != inputs[k]] if existing else None
    damage = first_problem(out_dir, existing) if stale == [] else None
    if stale == [] and damage is None:
        _remove_dir(work)  # left by a run killed while it removed it
        return existing, True
    if occupied(out_dir) and not overwrite and damage is None:
        why = f" It was prepared from other inputs ({', '.join(stale)} differ)." if stale else ""
        raise DataError(f"{out_dir} already exists.{why} Choose another output folder or pass --overwrite.")
    tokenized = _tokenized_manifest(work, expected) if expected else None  # left by an interrupted run
    if tokenized is None:
        tokenized = _tokenize(data, encoder, work, spec_name=spec_name, max_length=None, overlong="drop",
                              on_error=on_error, workers=workers, shard_bytes=256 << 20, lines_per_chunk=256,
                              progress=on_tokenize).manifest
    manifest = write_packed(work, out_dir, context_length=context_length, overflow=overflow, seed=seed,
                            shard_bytes=shard_bytes, overwrite=True, progress=on_pack,
                            extra={"tokenized": None,  # the intermediate folder is removed below
                                   "tokenize": {"counts": tokenized["counts"], "tokens": tokenized["tokens"],
                                                "warnings": tokenized.get("warnings", [])}})
    _remove_dir(work)
    return ({**manifest, "rebuilt": damage} if damage else manifest), False


def _remove_dir(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    elif os.path.lexists(folder):
        folder.unlink()


def _tokenized_manifest(work: Path, expected: Provenance) -> dict | None:
    """The manifest of an intermediate tokenized folder made from the expected inputs, whose
    shards all match it (size and sha256), if there is one."""
    try:
        manifest = read_manifest(work, expect=TOKENIZED_FORMAT)
        if Provenance.of_manifest(manifest) != expected or first_problem(work, manifest) is not None:
            return None
        return manifest
    except DataError:
        return None
