"""``tforge prepare``: a JSONL conversation file → packed Arrow shards, in one command.

The file is read once (twice when an earlier output exists: it is hashed first, to decide
whether that output is up to date): conversations are tokenized (in worker processes) into a hidden
``.NAME.tokenized/`` folder beside the output, then packed (:mod:`template_forge.shards`),
then the intermediate folder is removed. Only lengths are held in memory, so the input may
be larger than memory. An interrupted run is resumed by running the same command again.

The packed manifest records ``inputs``: the sha256 of the data file, of the spec and of the
tokenizer, and every option that changes the result. An output folder whose ``inputs``
equal the current ones is up to date and reused as it is; a stale one is never reused.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from template_forge.errors import DataError
from template_forge.io import occupied
from template_forge.mask import Encoder
from template_forge.pipeline import fingerprint_spec, tokenize_file
from template_forge.shards import inputs_of, pack_tokenized, packed_manifest
from template_forge.spec import Spec
from template_forge.tokenized import FORMAT as TOKENIZED_FORMAT
from template_forge.tokenized import read_manifest, sha256_file


def expected_inputs(data: str | Path, spec: Spec, encoder: Encoder, *, context_length: int, overflow: str = "drop",
                    seed: int = 0, on_error: str = "stop") -> dict:
    """The ``inputs`` a packed manifest of this data, spec and tokenizer would record
    (:func:`~template_forge.shards.inputs_of` on the tokenize manifest ``prepare`` writes)."""
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
        return inputs_of(read_manifest(work, expect=TOKENIZED_FORMAT), inputs) == inputs
    except (DataError, KeyError):
        return False
