"""Where a tforge folder came from: one provenance record, the manifest, and the hashes.

``tforge tokenize`` writes a :class:`Provenance` into its manifest; ``tforge pack`` and
``tforge prepare`` read it back (from manifests of any earlier version too) to record what a
packed folder was made from and to decide whether an existing folder is up to date::

    data.jsonl ─sha256─┐
    spec ───────sha256─┼─ Provenance ── manifest.json of the tokenized folder
    tokenizer ──sha256─┤   (+ policy, parse_special, max_length, overlong, on_error)
    options ───────────┘        │
                                └── .inputs(context_length, overflow, seed)
                                        └── manifest.json of the packed folder: "inputs"

Both kinds of folder hold ``manifest.json`` beside their shards, and every shard's sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from template_forge.errors import DataError
from template_forge.format.spec import Spec

MANIFEST = "manifest.json"
#: The ``format`` of a manifest: which kind of folder it describes.
TOKENIZED_FORMAT = "tforge.tokenized/1"
PACKED_FORMAT = "tforge.packed/1"


@dataclass(frozen=True)
class Provenance:
    """What the rows of a tokenized folder were made from (by sha256), and how.

    The first eight fields are what the rows depend on: two folders whose records are equal
    hold the same rows, and pack into the same packs with the same options. The last five
    say where things were (paths, names, the engine) and take no part in comparisons.

    Examples:
        >>> p = Provenance("d" * 64, "s" * 64, "t" * 64, "assistant", False, source_path="/data/train.jsonl")
        >>> p == dataclasses.replace(p, source_path="/elsewhere/train.jsonl")
        True
        >>> Provenance.of_manifest(p.manifest_entries()) == p, sorted(p.inputs(context_length=4096, overflow="drop", seed=0))[:3]
        (True, ['context_length', 'max_length', 'on_error'])
    """

    source_sha256: str
    spec_sha256: str
    tokenizer_sha256: str
    policy: str | None = None
    parse_special: bool | None = None
    max_length: int | None = None
    overlong: str | None = None
    on_error: str | None = None
    source_path: str | None = field(default=None, compare=False)
    spec_name: str | None = field(default=None, compare=False)
    tokenizer_engine: str | None = field(default=None, compare=False)
    tokenizer_vocab_size: int | None = field(default=None, compare=False)
    tokenizer_path: str | None = field(default=None, compare=False)

    def inputs(self, *, context_length: int, overflow: str, seed: int) -> dict:
        """What a packed folder made from these rows records as its ``inputs``: two
        preparations with equal ``inputs`` hold the same packs."""
        return {
            "source_sha256": self.source_sha256, "spec_sha256": self.spec_sha256,
            "tokenizer_sha256": self.tokenizer_sha256, "policy": self.policy, "parse_special": self.parse_special,
            "max_length": self.max_length, "overlong": self.overlong, "on_error": self.on_error,
            "context_length": int(context_length), "overflow": overflow, "seed": int(seed),
        }

    def described(self) -> dict:
        """The ``source``, ``spec``, ``tokenizer``, ``policy`` and ``parse_special`` entries of a
        manifest (what ``tforge stats`` shows); a packed manifest copies them."""
        tokenizer = {"sha256": self.tokenizer_sha256, "engine": self.tokenizer_engine,
                     "vocab_size": self.tokenizer_vocab_size, "path": self.tokenizer_path}
        return {
            "source": _present({"path": self.source_path, "sha256": self.source_sha256}),
            "spec": _present({"name": self.spec_name, "sha256": self.spec_sha256}),
            "tokenizer": _present(tokenizer),
            **_present({"policy": self.policy, "parse_special": self.parse_special}),
        }

    def manifest_entries(self) -> dict:
        """Every entry of the record, as a tokenized manifest holds them."""
        return {**self.described(), "max_length": self.max_length, "overlong": self.overlong,
                "on_error": self.on_error}

    @classmethod
    def of_manifest(cls, manifest: dict, *, where: str = "manifest.json") -> Provenance:
        """The record a tokenized manifest holds (written by any version of ``tforge tokenize``:
        entries an older one did not write read as None)."""
        try:
            source, spec, tokenizer = manifest["source"], manifest["spec"], manifest["tokenizer"]
            hashes = source["sha256"], spec["sha256"], tokenizer["sha256"]
        except (KeyError, TypeError):
            raise DataError(f"{where}: no source, spec and tokenizer sha256; not a tokenized manifest. "
                            "Tokenize the data again.") from None
        return cls(*hashes, **{k: manifest.get(k) for k in ("policy", "parse_special", "max_length", "overlong",
                                                            "on_error")},
                   source_path=source.get("path"), spec_name=spec.get("name"), tokenizer_engine=tokenizer.get("engine"),
                   tokenizer_vocab_size=tokenizer.get("vocab_size"), tokenizer_path=tokenizer.get("path"))


def _present(entries: dict) -> dict:
    return {k: v for k, v in entries.items() if v is not None}


def fingerprint_spec(spec: Spec) -> str:
    """A stable hash of what a spec means (every resolved field)."""
    data = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


# --------------------------------------------------------------------------- manifests and hashes
def read_manifest(folder: str | Path, *, expect: str | None = None) -> dict:
    """The manifest of a ``tforge tokenize`` / ``tforge pack`` folder, with a clear error if absent."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        hint = " An interrupted run left it unfinished; rerun the same command to resume." if (
            folder.parent / f".{folder.name}.partial").is_dir() else ""
        raise DataError(f"{folder}: no {MANIFEST}; not a tforge output folder.{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}).") from None
    if expect and manifest.get("format") != expect:
        raise DataError(f"{path}: format {manifest.get('format')!r}, expected {expect!r}. "
                        + ("Pack it first with `tforge pack`." if manifest.get("format") == TOKENIZED_FORMAT else ""))
    return manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_shards(folder: str | Path, manifest: dict) -> int:
    """Recompute the sha256 of every shard a manifest lists; returns how many were checked."""
    for shard in manifest["shards"]:
        path = Path(folder) / shard["file"]
        if not path.is_file() or sha256_file(path) != shard["sha256"]:
            raise DataError(f"{path}: {'missing' if not path.is_file() else 'contents differ from'} the manifest's "
                            "sha256; the folder was modified after it was written. Make it again.")
    return len(manifest["shards"])


class HashingFile:
    """A write-only file object for ``pyarrow.PythonFile`` that hashes what passes through
    it, so a shard's sha256 needs no second read of the shard."""

    def __init__(self, fh):
        self.fh, self.digest, self.closed = fh, hashlib.sha256(), False

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:  # the caller closes the underlying file
        self.closed = True
