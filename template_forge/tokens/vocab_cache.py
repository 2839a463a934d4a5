"""The on-disk cache of :class:`~template_forge.tokens.vocab.Vocab`'s per-tokenizer analysis.

Loading the Llama 3 tokenizer and analysing it (serialising it back to JSON and parsing
that, the byte length of 128k pieces, the tiktoken ranks, the exactness and stress probes)
takes about 2 s; reading the result back takes a few tens of milliseconds. Entries live in
``$TFORGE_CACHE_DIR/vocab/`` (default ``~/.cache/tforge/vocab/``, the root the trainer's
download cache uses), one ``.npz`` per tokenizer file, named by a key over the sha256 of
``tokenizer.json``'s bytes, the engine asked for, :data:`FORMAT` and the versions of
``tokenizers`` and ``tiktoken`` (the probes' verdicts depend on them). ``TFORGE_NO_CACHE=1``
turns the cache off.

The folder may be written by other users or programs, so an entry is untrusted data: plain
arrays read with ``allow_pickle=False`` (never a pickle), bounded in size, opened without
following a symlink, and checked for its exact set of arrays, their dtypes and shapes, its
key and its internal consistency (every rank's bytes as long as the byte-length table says).
Anything else is a miss: the analysis is redone and the entry rewritten atomically. A cache
that cannot be written costs a one-line warning and nothing else.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from template_forge.io import cache_root, read_regular

#: Bump when what is stored, or how it is computed, changes: old entries become misses.
FORMAT = 1
#: An entry larger than this is not read (the Llama 4 vocabulary's is about 4 MB).
MAX_ENTRY_BYTES = 256 << 20
_ARRAYS = {"meta", "byte_len", "rank_bytes", "rank_offsets", "rank_ids"}
_META = {"format": int, "key": str, "sha256": str, "vocab_size": int, "control": dict, "added": list,
         "lengths_exact": bool, "byte_level": bool, "engine": str, "pattern": (str, type(None)), "specials": dict}
_warned: set[str] = set()


@dataclass
class Analysis:
    """Everything :class:`Vocab` computes from a tokenizer that the encoder needs."""

    sha256: str
    vocab_size: int
    control: dict[str, int]
    added: list[str]
    byte_len: np.ndarray
    lengths_exact: bool
    byte_level: bool
    engine: str  # "tiktoken" or "hf"
    pattern: str | None = None  # tiktoken engine: the split regex, ranks and special tokens
    ranks: dict[bytes, int] = field(default_factory=dict)
    specials: dict[str, int] = field(default_factory=dict)
    encoding: Any = None  # the tiktoken.Encoding, when just built (not stored)


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The vocabulary cache folder, or None when ``TFORGE_NO_CACHE`` is set (to anything but 0).

    Examples:
        >>> str(cache_dir({"TFORGE_CACHE_DIR": "/tmp/c"}))
        '/tmp/c/vocab'
        >>> cache_dir({"TFORGE_CACHE_DIR": "/tmp/c", "TFORGE_NO_CACHE": "1"}) is None
        True
        >>> cache_dir({}) == Path.home() / ".cache" / "tforge" / "vocab"
        True
    """
    if environ.get("TFORGE_NO_CACHE", "").strip() not in ("", "0"):
        return None
    return cache_root(environ) / "vocab"


def entry_key(file_sha256: str, engine: str) -> str:
    """The name of the entry for a tokenizer file's sha256 and an engine."""
    import tokenizers

    try:
        import tiktoken

        tiktoken_version = getattr(tiktoken, "__version__", "?")
    except ImportError:
        tiktoken_version = None
    parts = [FORMAT, file_sha256, engine, tokenizers.__version__, tiktoken_version]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]


def load_usable(key: str) -> Analysis | None:
    """The cached analysis, its tiktoken encoding built; None if there is none or it is unusable."""
    analysis = load(key)
    if analysis is None or analysis.engine != "tiktoken":
        return analysis
    try:
        import tiktoken

        analysis.encoding = tiktoken.Encoding(name="tforge", pat_str=analysis.pattern,
                                              mergeable_ranks=analysis.ranks, special_tokens=analysis.specials)
    except BaseException as exc:  # a planted pattern or table tiktoken refuses (pyo3 panics are BaseExceptions)
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        warn_entry(key, f"is refused by tiktoken ({type(exc).__name__})")
        return None
    return analysis


def source_key(source: Any, engine: str) -> str | None:
    """The cache entry of a tokenizer file (None for an object, or a file that cannot be read:
    then :class:`Vocab` raises the located error)."""
    if not isinstance(source, (str, os.PathLike)) or cache_dir() is None:
        return None
    path = Path(source)
    try:
        raw = (path / "tokenizer.json" if path.is_dir() else path).read_bytes()
    except OSError:
        return None
    return entry_key(hashlib.sha256(raw).hexdigest(), engine)


def load(key: str) -> Analysis | None:
    """The cached analysis for ``key``, or None (no cache, no entry, or a bad one: warned)."""
    folder = _folder(create=False)
    if folder is None:
        return None
    path = folder / f"{key}.npz"
    try:
        raw = read_regular(path, limit=MAX_ENTRY_BYTES)  # no link followed, a planted FIFO cannot block
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink (ELOOP), no permission
        _warn(f"entry {path.name}", f"cannot be opened ({exc.strerror}); rebuilding it")
        return None
    except ValueError as exc:  # a FIFO or device, too large
        _warn(f"entry {path.name}", f"is not a valid entry ({exc}); rebuilding it")
        return None
    try:
        return _decode(raw, key)
    except Exception as exc:  # truncated, foreign, wrong version: all a miss
        _warn(f"entry {path.name}", f"is not a valid entry ({str(exc)[:100]}); rebuilding it")
        return None


def store(key: str, analysis: Analysis) -> None:
    """Write the entry for ``key`` atomically; a failure is a one-line warning."""
    from template_forge.io import write_atomic

    folder = _folder(create=True)
    if folder is None:
        return
    try:
        write_atomic(folder / f"{key}.npz", _encode(key, analysis))
    except OSError as exc:
        _warn("folder", f"{folder} cannot be written ({exc.strerror}); working without it")


def warn_entry(key: str, why: str) -> None:
    """Warn (once) that entry ``key`` could not be used and is rebuilt."""
    _warn(f"entry {key}.npz", f"{why}; rebuilding it")


def _folder(*, create: bool) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _warn("folder", f"{folder} cannot be used ({exc.strerror}); working without it")
        return None
    if not stat.S_ISDIR(st.st_mode):  # a symlink would lead entries out of the cache
        _warn("folder", f"{folder} is not a plain folder (a symlink?); working without it")
        return None
    return folder


def _encode(key: str, a: Analysis) -> bytes:
    meta = {"format": FORMAT, "key": key, "sha256": a.sha256, "vocab_size": a.vocab_size, "control": a.control,
            "added": a.added, "lengths_exact": a.lengths_exact, "byte_level": a.byte_level, "engine": a.engine,
            "pattern": a.pattern, "specials": a.specials}
    pieces = list(a.ranks)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             byte_len=a.byte_len.astype(np.int64), rank_bytes=np.frombuffer(b"".join(pieces), dtype=np.uint8),
             rank_offsets=offsets, rank_ids=np.fromiter(a.ranks.values(), dtype=np.int64, count=len(pieces)))
    return buf.getvalue()


def _decode(raw: bytes, key: str) -> Analysis:
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:  # bound what a (compressed) member may expand to
        names = {info.filename.removesuffix(".npy") for info in zf.infolist()}
        if names != _ARRAYS or sum(info.file_size for info in zf.infolist()) > MAX_ENTRY_BYTES:
            raise ValueError(f"arrays {sorted(names)[:8]}")
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in _ARRAYS}
    meta = json.loads(_typed(arrays["meta"], np.uint8).tobytes())
    _check_meta(meta, key)
    byte_len = _typed(arrays["byte_len"], np.int64)
    if len(byte_len) < meta["vocab_size"] or (len(byte_len) and (byte_len.min() < 0 or byte_len.max() > 1 << 20)):
        raise ValueError("byte_len does not fit the vocabulary")
    _check_ids(meta["control"], len(byte_len), "control")
    _check_ids(meta["specials"], len(byte_len), "specials")
    ranks = _ranks(arrays, byte_len)
    if (meta["engine"] == "tiktoken") != bool(ranks) or (meta["engine"] == "tiktoken") != (meta["pattern"] is not None):
        raise ValueError("engine, pattern and ranks disagree")
    return Analysis(meta["sha256"], meta["vocab_size"], meta["control"], meta["added"], byte_len,
                    meta["lengths_exact"], meta["byte_level"], meta["engine"], meta["pattern"], ranks,
                    meta["specials"])


def _check_meta(meta, key: str) -> None:
    if not isinstance(meta, dict) or set(meta) != set(_META):
        raise ValueError("foreign metadata")
    for name, kind in _META.items():
        if not isinstance(meta[name], kind) or (kind is int and isinstance(meta[name], bool)):
            raise ValueError(f"`{name}` is {type(meta[name]).__name__}")
    if meta["format"] != FORMAT or meta["key"] != key:
        raise ValueError(f"format {meta['format']}, key {meta['key'][:12]}: another version's or another entry")
    if meta["engine"] not in ("hf", "tiktoken") or not all(isinstance(t, str) for t in meta["added"]):
        raise ValueError("bad engine or added tokens")


def _check_ids(table, size: int, what: str) -> None:
    if not all(isinstance(k, str) and k and type(v) is int and 0 <= v < size for k, v in table.items()):
        raise ValueError(f"{what} ids outside the vocabulary")


def _ranks(arrays: dict, byte_len: np.ndarray) -> dict[bytes, int]:
    blob = _typed(arrays["rank_bytes"], np.uint8).tobytes()
    offsets, ids = _typed(arrays["rank_offsets"], np.int64), _typed(arrays["rank_ids"], np.int64)
    if (len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) <= 0)
            or (len(ids) and (ids.min() < 0 or ids.max() >= len(byte_len)))
            or len(np.unique(ids)) != len(ids)):
        raise ValueError("the ranks are not a table of distinct pieces")
    if not np.array_equal(byte_len[ids], np.diff(offsets)):  # the two tables must describe the same pieces
        raise ValueError("the ranks disagree with the byte lengths")
    bounds = offsets.tolist()
    ranks = dict(zip(map(blob.__getitem__, map(slice, bounds[:-1], bounds[1:])), ids.tolist()))
    if len(ranks) != len(ids):
        raise ValueError("a piece appears twice in the ranks")
    return ranks


def _typed(array: np.ndarray, dtype) -> np.ndarray:
    if array.dtype != dtype or array.ndim != 1:
        raise ValueError(f"an array of {array.dtype} × {array.shape}, expected 1-D {np.dtype(dtype)}")
    return array


def _warn(what: str, message: str) -> None:
    if what not in _warned:  # one line per kind and process, never a traceback
        _warned.add(what)
        print(f"warning: tforge vocabulary cache {what} {message}", file=sys.stderr)
