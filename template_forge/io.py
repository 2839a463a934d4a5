"""Atomic file output: a file appears whole or not at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from template_forge.errors import DataError


def _prepare(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to a synced temporary file beside ``path``; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic_many(files: dict[Path, str | bytes]) -> None:
    """Prepare every file first, then rename them into place: a failure while writing
    leaves every destination untouched."""
    prepared: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            prepared.append((_prepare(Path(path), data), Path(path)))
    except BaseException:
        for tmp, _ in prepared:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in prepared:
        os.replace(tmp, path)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> write_atomic(p, "hi"); p.read_text()
        'hi'
    """
    write_atomic_many({Path(path): data})


def read_json_object(path: Path) -> dict:
    """Read a JSON object, with a located error if the file is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}). Fix or remove the file.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text. Fix or remove the file.") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a config. Fix or remove the file.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    return data


def install_chat_template(tokenizer_dir: str | Path, template: str) -> tuple[Path, Path]:
    """Write ``chat_template.jinja`` and set ``chat_template`` in ``tokenizer_config.json``.

    transformers reads ``chat_template.jinja`` before the JSON key, so writing only the
    JSON would be silently ignored when a stale ``.jinja`` file exists; both are written.
    Other keys of the config are kept; the config is created if absent. Both new files
    are fully prepared before either replaces its predecessor.
    """
    folder = Path(tokenizer_dir)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: --tokenizer-dir must be a folder, found a file.")
    config_path = folder / "tokenizer_config.json"
    config = read_json_object(config_path) if config_path.exists() else {}
    config["chat_template"] = template
    config_text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    jinja_path = folder / "chat_template.jinja"
    write_atomic_many({jinja_path: template, config_path: config_text})
    return jinja_path, config_path


def occupied(path: str | Path) -> bool:
    """Whether writing an output folder at ``path`` would replace something: a file, or a
    folder that is not empty."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


# --------------------------------------------------------------------------- output folders
# The names a run writing output folder NAME creates beside it. clear_stale() removes exactly
# these, so they are spelled in one place.
def temp_dir(target: Path) -> Path:
    """A new empty folder ``.NAME.XXXXXXXX.tmp`` beside ``target``, to fill and rename onto it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def _aside(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


def _stale_patterns(name: str) -> tuple[re.Pattern, re.Pattern]:
    """Leftovers to remove (mkdtemp's names: 8 characters of tempfile._RandomNameSequence's
    alphabet; a replaced folder being deleted), and a replaced folder not yet deleted."""
    name = re.escape(name)
    return re.compile(rf"\.{name}\.([a-z0-9_]{{8}}\.tmp|trash-[0-9]+)"), re.compile(rf"\.{name}\.old-[0-9]+")


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Rename the finished folder ``new`` onto ``target``; an existing target is moved aside
    first and removed after, so ``target`` is always either the old folder or the new one.

    A kill between the two renames leaves ``.NAME.old-PID`` (whole) and no ``target``;
    :func:`clear_stale` renames it back. The old folder is renamed to ``.NAME.trash-PID``
    before it is deleted, so a half-deleted one is never mistaken for a whole one.
    """
    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    old, trash = _aside(target, "old"), _aside(target, "trash")
    os.replace(target, old)
    os.replace(new, target)
    os.replace(old, trash)
    shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() and not trash.is_symlink() else trash.unlink()


def clear_stale(target: str | Path) -> list[str]:
    """Remove what dead runs writing ``target`` left beside it; returns the names removed.

    Only call it while holding the output's lock (:func:`template_forge.locks.output_lock`):
    then no live run is using these names, so they are leftovers by construction. Exactly
    the names :func:`temp_dir` and :func:`replace_dir` create are touched (never through a
    symlink); a whole folder moved aside by a run killed before it renamed the new one into
    place is renamed back onto a missing ``target``.
    """
    target = Path(target)
    stale, aside = _stale_patterns(target.name)
    try:
        entries = [e for e in os.scandir(target.parent) if not e.is_symlink()]
    except FileNotFoundError:
        return []
    olds = sorted((e for e in entries if aside.fullmatch(e.name)), key=lambda e: e.stat().st_ctime_ns)
    if olds and not os.path.lexists(target):
        os.replace(olds.pop().path, target)  # the newest: the folder the dead run was replacing
    removed = []
    # write_atomic's temporary *files* share the .tmp pattern: only folders are ours
    leftovers = [e for e in entries if (m := stale.fullmatch(e.name)) and (e.is_dir() or m[1].startswith("trash-"))]
    for entry in olds + leftovers:
        shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else os.unlink(entry.path)
        removed.append(entry.name)
    return removed


def cache_root(environ=os.environ) -> Path:
    """tforge's cache folder for this user: ``$TFORGE_CACHE_DIR`` (``~`` expanded), else
    ``~/.cache/tforge``. The trainer's downloads and the vocabulary analyses live below it.

    Examples:
        >>> str(cache_root({"TFORGE_CACHE_DIR": "/tmp/c"}))
        '/tmp/c'
        >>> cache_root({"TFORGE_CACHE_DIR": ""}) == Path.home() / ".cache" / "tforge"
        True
    """
    return Path(environ.get("TFORGE_CACHE_DIR") or Path.home() / ".cache" / "tforge").expanduser()


def read_regular(path: str | Path, *, limit: int) -> bytes:
    """The bytes of the regular file ``path``, read from a folder tforge does not trust (a
    cache): a symlink is not followed (``OSError``, ELOOP), a FIFO or device planted under the
    name neither blocks nor is read, and neither is a file past ``limit`` bytes (``ValueError``).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> read_regular(p, limit=3)
        b'abc'
        >>> read_regular(p, limit=2)
        Traceback (most recent call last):
        ValueError: larger than 2 bytes
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError("not a regular file")
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return raw

