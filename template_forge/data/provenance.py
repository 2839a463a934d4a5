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
import os
import re
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
#: A manifest larger than this is not one tforge wrote (a real one lists a few thousand shards).
MAX_MANIFEST_BYTES = 64 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_manifest(folder: str | Path, *, expect: str | None = None) -> dict:
    """The manifest of a ``tforge tokenize`` / ``tforge pack`` folder, with a clear error if absent.

    Its ``shards`` are checked on the way (:func:`check_shard_entries`): whatever reads the
    manifest can open ``folder / shard["file"]`` without leaving the folder.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        hint = " An interrupted run left it unfinished; rerun the same command to resume." if (
            folder.parent / f".{folder.name}.partial").is_dir() else ""
        raise DataError(f"{folder}: no {MANIFEST}; not a tforge output folder.{hint}")
    manifest = read_json_file(path, what="manifest")
    if expect and manifest.get("format") != expect:
        raise DataError(f"{path}: format {manifest.get('format')!r}, expected {expect!r}. "
                        + ("Pack it first with `tforge pack`." if manifest.get("format") == TOKENIZED_FORMAT else ""))
    check_shard_entries(manifest.get("shards"), where=path)
    return manifest


def read_json_file(path: Path, *, what: str) -> dict:
    """A JSON object tforge wrote (a manifest, a progress file), bounded in size and depth."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, more than a {what} can be "
                            f"({MAX_MANIFEST_BYTES:,}). It was not written by tforge; make the folder again.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DataError(f"{path}: unreadable {what} ({why}).") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}; not a tforge {what}.")
    return data


def check_shard_entries(shards, *, where: Path | str) -> list[dict]:
    """Check the ``shards`` list of a manifest or progress file ``where``: every entry names a
    plain file of the folder (no ``/``, ``..``, absolute path or hidden name) and records its
    ``rows``, ``bytes`` and ``sha256``. Returns ``shards``.

    Examples:
        >>> check_shard_entries([{"file": "../x.arrow", "rows": 1, "bytes": 9, "sha256": "0" * 64}], where="m.json")
        Traceback (most recent call last):
        ...
        template_forge.errors.DataError: m.json: `shards[0].file` is '../x.arrow'; expected a plain file name inside the folder (no '/', '..', absolute path or leading '.'). The file was edited or damaged; make the folder again.
    """
    if not isinstance(shards, list):
        raise DataError(f"{where}: `shards` must be a list of shard entries, found {type(shards).__name__}. "
                        "The file was edited or damaged; make the folder again.")
    for k, shard in enumerate(shards):
        field_ = f"shards[{k}]"
        if not isinstance(shard, dict):
            raise DataError(f"{where}: `{field_}` must be an object, found {type(shard).__name__}. "
                            "The file was edited or damaged; make the folder again.")
        name = shard.get("file")
        if not _plain_name(name):
            raise DataError(f"{where}: `{field_}.file` is {_shown(name)}; expected a plain file name inside the "
                            "folder (no '/', '..', absolute path or leading '.'). The file was edited or damaged; "
                            "make the folder again.")
        for key in ("rows", "bytes"):
            if type(shard.get(key)) is not int or shard[key] < 0:
                raise DataError(f"{where}: `{field_}.{key}` is {_shown(shard.get(key))}; expected an integer ≥ 0. "
                                "The file was edited or damaged; make the folder again.")
        if not isinstance(shard.get("sha256"), str) or not _SHA256.fullmatch(shard["sha256"]):
            raise DataError(f"{where}: `{field_}.sha256` is {_shown(shard.get('sha256'))}; expected 64 lowercase "
                            "hex digits. The file was edited or damaged; make the folder again.")
    return shards


def _plain_name(name) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".")
            and not any(c in name for c in "/\\\0") and name.isprintable())


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def shard_path(folder: str | Path, name: str, *, where: Path | str) -> Path:
    """``folder / name`` for a shard name already checked by :func:`check_shard_entries`, after
    making sure it is not a symlink that leads out of ``folder``."""
    path = Path(folder) / name
    if path.is_symlink() and os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise DataError(f"{where}: shard {name} is a symlink to {os.path.realpath(path)}, outside {folder}. "
                        "Shards must be files of the folder; make the folder again.")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_problem(folder: str | Path, shard: dict, *, where: Path | str, hashes: bool = True) -> str | None:
    """What is wrong with one checked shard entry of ``folder`` (missing, size, sha256), or None."""
    path = shard_path(folder, shard["file"], where=where)
    if not path.is_file():  # not a FIFO or a device either: reading one could block for ever
        return f"{shard['file']} is missing"
    size = path.stat().st_size
    if size != shard["bytes"]:
        return f"{shard['file']} has {size:,} bytes, the manifest says {shard['bytes']:,}"
    if hashes and sha256_file(path) != shard["sha256"]:
        return f"{shard['file']}'s contents differ from the manifest's sha256"
    return None


def first_problem(folder: str | Path, manifest: dict, *, hashes: bool = True) -> str | None:
    """What is wrong with the first shard of ``folder`` that does not match its (checked)
    manifest (missing, size, with ``hashes`` sha256), or None when all of them match."""
    where = Path(folder) / MANIFEST
    for shard in check_shard_entries(manifest.get("shards"), where=where):
        problem = shard_problem(folder, shard, where=where, hashes=hashes)
        if problem:
            return problem
    return None


def verify_shards(folder: str | Path, manifest: dict, *, hashes: bool = True) -> int:
    """Check every shard a manifest lists: present, of its recorded size and (with ``hashes``)
    its recorded sha256; returns how many were checked."""
    problem = first_problem(folder, manifest, hashes=hashes)
    if problem:
        raise DataError(f"{folder}: {problem}; the folder was modified after it was written. Make it again.")
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
