"""Atomic file output: a file appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
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


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Rename the finished folder ``new`` onto ``target``; an existing target is moved aside
    first and removed after, so ``target`` is always either the old folder or the new one."""
    new, target = Path(new), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(new, target)
