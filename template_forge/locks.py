"""One writer per output folder: an exclusive lock beside it, held for the whole run.

Every command that writes an output folder ``NAME`` (``tforge tokenize``, ``prepare``,
``pack``, ``merge``) holds ``flock(LOCK_EX)`` on ``.NAME.lock`` beside it from before it
looks at the folder until the folder is in place. A second run into the same folder stops
with a message naming the first (or, with ``wait=True`` / ``--wait``, waits for it and then
finds the folder up to date). The kernel drops the lock when its process dies, even by
``kill -9``, so a lock is never stale; while holding it, what earlier runs of ``NAME`` left
beside it belongs to dead runs and is cleared (:func:`template_forge.io.clear_stale`).

The lock file is removed when the lock is let go. A run that opened it before and then
acquires the lock on the removed file sees that the path no longer names that file, and
locks the new one instead: two runs never both believe they hold the lock.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from template_forge.errors import DataError
from template_forge.io import clear_stale

#: descriptors of the locks this process holds; a forked child closes its copies (below)
_HELD: set[int] = set()


def _forget_inherited() -> None:
    """In a forked child (tokenize's workers): close the inherited lock descriptors. An flock
    belongs to the open file, which the child shares; a worker outliving a killed parent
    would otherwise keep the output locked."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)


def lock_path(target: str | Path) -> Path:
    """The lock file of output folder ``target``: ``.NAME.lock`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | Path, *, wait: bool = False,
                on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of output folder ``target``, and clear what dead runs left.

    Args:
        wait: when another run holds the lock, wait for it (``on_wait`` is told once, with a
            message naming it) instead of raising :class:`DataError`.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with output_lock(out) as lock:
        ...     lock.name, lock.exists()
        ('.out.lock', True)
        >>> lock.exists()
        False
    """
    import fcntl  # POSIX only; imported here so that `import template_forge` works elsewhere

    target = Path(target)
    if target.name in ("", ".", ".."):
        raise DataError(f"{target}: an output must name a new folder, not {str(target)!r}. Pass a path such as "
                        "out/train-packed.")
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target)
    fd = _acquire(fcntl, path, target, wait, on_wait)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _who().encode("utf-8", "replace"), 0)
        clear_stale(target)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: see the module docstring
        _HELD.discard(fd)
        os.close(fd)


def _acquire(fcntl, path: Path, target: Path, wait: bool, on_wait) -> int:
    told = False
    while True:
        fd = _open(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise DataError(f"{target}: another tforge run is writing this output folder ({holder}). "
                                    "Wait for it to finish, or pass --wait to start when it does.") from None
                if on_wait and not told:
                    on_wait(f"{target} is being written by another tforge run ({holder}); waiting for it to "
                            "finish (Ctrl-C to stop).")
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(path, fd):
                _HELD.add(fd)
                return fd
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: a file system without locks
            os.close(fd)
            raise DataError(f"{path}: cannot lock ({exc.strerror}); tforge needs a file system with flock "
                            "for its output folders. Write the output to a local disk.") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file as it let go: lock the one there now


def _open(path: Path) -> int:
    """Open (or create) the lock file, refusing symlinks and anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        why = "it is a symlink" if os.path.islink(path) else exc.strerror
        raise DataError(f"{path}: cannot open the output's lock file ({why}). Remove it, or choose another "
                        "output folder.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{path}: the output's lock file is not a regular file. Remove it, or choose another "
                        "output folder.")
    return fd


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _who() -> str:
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    command = shlex.join(argv)
    return f"pid {os.getpid()}: {command[:300]}\n"


def _holder(fd: int) -> str:
    """Who holds the lock, as it wrote itself into the file (made printable). A holder writes
    just after it locks; give one that has not yet a moment (0.5 s at most) to do so."""
    for _ in range(50):
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if text:
            return "".join(c if c.isprintable() else "?" for c in text)
        time.sleep(0.01)
    return "a process that has not said which"
