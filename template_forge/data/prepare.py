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
equal the current ones is up to date and reused as it is; a stale one is never reused.
"""


from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from template_forge.data.conversations import REASONS, BadLine, parse_line
from template_forge.data.packed import inputs_of, pack_tokenized, packed_manifest
from template_forge.data.tokenized import FORMAT, MANIFEST, ShardWriter, read_manifest, sha256_file
from template_forge.errors import DataError, RenderError
from template_forge.format.spec import Spec
from template_forge.io import occupied, replace_dir
from template_forge.parallel import default_workers, ordered_map
from template_forge.tokens.encoder import Encoded, Encoder

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


def fingerprint_spec(spec: Spec) -> str:
    """A stable hash of what a spec means (every resolved field)."""
    data = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class _Settings:
    path: str
    alternation: bool
    need_assistant: bool
    max_length: int | None
    overlong: str


def _chunks(path: Path, lines_per_chunk: int, digest, progress: Callable[[int], None] | None) -> Iterator[tuple[int, list[bytes]]]:
    with open(path, "rb") as fh:
        start, batch = 1, []
        for number, raw in enumerate(fh, 1):
            digest.update(raw)
            if progress:
                progress(len(raw))
            batch.append(raw)
            if len(batch) >= lines_per_chunk:
                yield start, batch
                start, batch = number + 1, []
        if batch:
            yield start, batch


def _work(state: tuple[Encoder, _Settings], chunk: tuple[int, list[bytes]]) -> list[tuple[int, Any]]:
    """Parse, check and encode one chunk of lines; returns ``(line, Encoded | BadLine | None)``."""
    encoder, st = state
    start, raws = chunk
    out: list[tuple[int, Any]] = []
    good: list[tuple[int, list[dict]]] = []
    for k, raw in enumerate(raws):
        line = start + k
        if not raw.strip():
            out.append((line, None))  # blank lines are allowed and ignored
            continue
        parsed = parse_line(raw.rstrip(b"\r\n"), path=st.path, line=line, require_alternation=st.alternation,
                            need_assistant=st.need_assistant)
        out.append((line, parsed))
        if not isinstance(parsed, BadLine):
            good.append((len(out) - 1, parsed))
    try:
        encoded = encoder.encode_batch([m for _, m in good], workers=1) if good else []
    except RenderError:
        encoded = []
        for slot, messages in good:  # find the culprits one by one
            try:
                encoded.append(encoder.encode(messages))
            except RenderError as exc:
                encoded.append(BadLine(st.path, out[slot][0], "unrenderable", str(exc).split(": ", 1)[-1]
                                       if exc.message_index is not None else str(exc), exc.message_index))
    for (slot, _), enc in zip(good, encoded):
        line = out[slot][0]
        if isinstance(enc, Encoded) and st.max_length is not None and enc.num_tokens > st.max_length:
            if st.overlong == "truncate":
                enc = Encoded(enc.input_ids[: st.max_length].copy(), enc.loss_mask[: st.max_length].copy())
                out[slot] = (line, ("truncated", enc))
                continue
            enc = BadLine(st.path, line, "too_long", f"{enc.num_tokens} tokens, more than --max-length "
                          f"{st.max_length}. Dropped (use --overlong truncate to keep the first {st.max_length}).")
        out[slot] = (line, enc)
    return out


def tokenize_file(data: str | Path, spec: Spec, tokenizer: Any, out_dir: str | Path, *,
                  spec_name: str | None = None, max_length: int | None = None, overlong: str = "drop",
                  on_error: str = "stop", workers: int | None = None, policy: str = "assistant",
                  parse_special: bool = False, overwrite: bool = False, shard_bytes: int = 256 << 20,
                  lines_per_chunk: int = 256, progress: Callable[[int], None] | None = None,
                  tokenizer_path: str | None = None) -> Report:
    """Tokenize a JSONL conversation file into ``out_dir`` (Arrow shards + manifest).

    Args:
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
    data, out_dir = Path(data), Path(out_dir)
    if not data.is_file():
        raise DataError(f"{data}: no such file. Pass a JSONL file with one {{\"messages\": [...]}} per line.")
    if occupied(out_dir) and not overwrite:
        raise DataError(f"{out_dir} already exists. Choose another output folder or pass --overwrite.")
    if tokenizer_path is None and isinstance(tokenizer, (str, os.PathLike)):
        tokenizer_path = os.path.abspath(tokenizer)
    encoder = tokenizer if isinstance(tokenizer, Encoder) else Encoder(spec, tokenizer, policy=policy,
                                                                        parse_special=parse_special)
    settings = _Settings(str(data), spec.require_alternation, encoder.policy != "causal_lm", max_length, overlong)
    workers = default_workers() if workers is None else max(1, workers)
    digest = hashlib.sha256()
    report = Report()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        writer = ShardWriter(tmp, shard_bytes=shard_bytes)
        lengths: list[int] = []
        chunks = _chunks(data, lines_per_chunk, digest, progress)
        for results in ordered_map(_work, (encoder, settings), chunks, workers):
            for line, result in results:
                if result is None:
                    continue
                report.lines += 1
                if isinstance(result, BadLine):
                    if on_error == "stop" and result.reason != "too_long":  # too long: --overlong decides
                        raise result.error()
                    report.note(result)
                    continue
                if isinstance(result, tuple):
                    report.truncated += 1
                    result = result[1]
                writer.add(result, line)
                report.written += 1
                report.tokens += result.num_tokens
                report.trained_tokens += result.num_trained
                lengths.append(result.num_tokens)
        shards = writer.close()
        manifest = _manifest(data, digest.hexdigest(), spec, spec_name, encoder, report, shards, lengths,
                             max_length=max_length, overlong=overlong, on_error=on_error)
        if tokenizer_path:
            manifest["tokenizer"]["path"] = str(tokenizer_path)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out_dir)
        report.manifest = manifest
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(data: Path, data_sha: str, spec: Spec, spec_name: str | None, encoder: Encoder, report: Report,
              shards: list[dict], lengths: list[int], **settings: Any) -> dict:
    arr = np.asarray(lengths, dtype=np.int64)
    stats = {}
    if arr.size:
        stats = {"min": int(arr.min()), "mean": round(float(arr.mean()), 1), "max": int(arr.max()),
                 **{f"p{q}": int(np.percentile(arr, q)) for q in (50, 90, 99)}}
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(data.resolve()), "sha256": data_sha},
        "spec": {"name": spec_name or spec.name, "sha256": fingerprint_spec(spec)},
        "tokenizer": {"sha256": encoder.vocab.sha256, "engine": encoder.engine,
                      "vocab_size": encoder.vocab.tok.get_vocab_size(with_added_tokens=True)},
        "policy": encoder.policy,
        "warnings": encoder.pairing_warnings(),
        "parse_special": encoder.parse_special,
        **settings,
        "counts": {"lines": report.lines, "written": report.written, "truncated": report.truncated,
                   "skipped": dict(sorted(report.skipped.items())),
                   "skipped_total": sum(report.skipped.values())},
        "tokens": {"total": report.tokens, "trained": report.trained_tokens, "per_conversation": stats},
        "columns": ["input_ids", "loss_mask", "num_tokens", "num_trained", "line"],
        "shards": shards,
    }


def describe_skips(report: Report) -> list[str]:
    """Human-readable lines: count per reason and the first examples."""
    out = []
    for reason, count in report.skipped.most_common():
        out.append(f"  {count:>8}  {REASONS.get(reason, reason)}  ({reason})")
        out.extend(f"            e.g. {ex}" for ex in report.examples.get(reason, [])[:2])
    return out


def expected_inputs(data: str | Path, spec: Spec, encoder: Encoder, *, context_length: int, overflow: str = "drop",
                    seed: int = 0, on_error: str = "stop") -> dict:
    """The ``inputs`` a packed manifest of this data, spec and tokenizer would record
    (:func:`~template_forge.data.packed.inputs_of` on the tokenize manifest ``prepare`` writes)."""
    tokenized = {"source": {"sha256": sha256_file(Path(data))}, "spec": {"sha256": fingerprint_spec(spec)},
                 "tokenizer": {"sha256": encoder.vocab.sha256}, "policy": encoder.policy,
                 "parse_special": encoder.parse_special, "max_length": None, "overlong": "drop", "on_error": on_error}
    return inputs_of(tokenized, {"context_length": int(context_length), "overflow": overflow, "seed": int(seed)})


def prepare_file(data: str | Path, spec: Spec, tokenizer: Any, out_dir: str | Path, *, context_length: int,
                 overflow: str = "drop", seed: int = 0, spec_name: str | None = None, policy: str = "assistant",
                 parse_special: bool = False, on_error: str = "stop", workers: int | None = None,
                 overwrite: bool = False, shard_bytes: int = 256 << 20, tokenizer_path: str | None = None,
                 on_tokenize: Callable[[int], None] | None = None,
                 on_pack: Callable[[int, int], None] | None = None) -> tuple[dict, bool]:
    """Tokenize and pack ``data`` into ``out_dir``; returns ``(manifest, reused)``.

    ``reused`` is True when ``out_dir`` already held this exact preparation (same data,
    spec, tokenizer and options, by hash), which is then returned untouched.

    Args:
        on_tokenize: progress callback, bytes of input read.
        on_pack: progress callback, ``(packs just written, total packs)``.
    """
    data, out_dir = Path(data), Path(out_dir)
    if not data.is_file():
        raise DataError(f"{data}: no such file. Pass a JSONL file with one {{\"messages\": [...]}} per line.")
    encoder = tokenizer if isinstance(tokenizer, Encoder) else Encoder(spec, tokenizer, policy=policy,
                                                                        parse_special=parse_special)
    work = out_dir.parent / f".{out_dir.name}.tokenized"
    # Hashing the data costs a read of it: only when there is an earlier result to compare with.
    # Otherwise the file is read once, and tokenize_file hashes it on the way.
    inputs = None
    if out_dir.exists() or work.exists():
        inputs = expected_inputs(data, spec, encoder, context_length=context_length, overflow=overflow, seed=seed,
                                 on_error=on_error)
    existing = packed_manifest(out_dir) if inputs else None
    stale = [k for k in inputs if existing.get("inputs", {}).get(k, "<absent>") != inputs[k]] if existing else None
    if stale == []:
        return existing, True
    if occupied(out_dir) and not overwrite:
        why = f" It was prepared from other inputs ({', '.join(stale)} differ)." if stale else ""
        raise DataError(f"{out_dir} already exists.{why} Choose another output folder or pass --overwrite.")
    if inputs and _tokenized_matches(work, inputs):
        tokenized = read_manifest(work)
    else:
        report = tokenize_file(data, spec, encoder, work, spec_name=spec_name, on_error=on_error, workers=workers,
                               overwrite=True, progress=on_tokenize, tokenizer_path=tokenizer_path)
        tokenized = report.manifest
    manifest = pack_tokenized(work, out_dir, context_length=context_length, overflow=overflow, seed=seed,
                              shard_bytes=shard_bytes, overwrite=True, progress=on_pack,
                              extra={"tokenized": None,  # the intermediate folder is removed below
                                     "tokenize": {"counts": tokenized["counts"], "tokens": tokenized["tokens"],
                                                  "warnings": tokenized.get("warnings", [])}})
    shutil.rmtree(work, ignore_errors=True)
    return manifest, False


def _tokenized_matches(work: Path, inputs: dict) -> bool:
    """An intermediate folder left by an interrupted ``prepare`` of the same inputs."""
    try:
        return inputs_of(read_manifest(work, expect=FORMAT), inputs) == inputs
    except (DataError, KeyError):
        return False
