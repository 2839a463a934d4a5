"""Where S3 objects may land on disk: keys checked as local paths, and a cache that stays in its root.

Everything :mod:`tforge_trainer.remote` makes from a key or writes, renames or deletes in
the cache goes through here:

* :func:`check_keys` refuses a listing, before anything is downloaded, unless every key can
  be its own file under the local folder: no empty, ``.`` or ``..`` segments, no control
  characters, names within the filesystem's ``NAME_MAX`` and paths within ``PATH_MAX``
  (bytes in the filesystem encoding), none of the cache's own names, no key that is both an
  object and the folder of others (``a`` and ``a/b``), no two keys that are one file on a
  case- or normalization-insensitive filesystem (``Config.json`` and ``config.json``).
* Below the cache root every folder is checked with ``lstat``, one component at a time: a
  symbolic link (to a file or a folder) or a foreign file where the cache goes is refused,
  never followed. New files are made with ``O_EXCL | O_NOFOLLOW`` under a temporary name
  and renamed over the final one, which replaces a link rather than writing through it.
* :func:`read_index` trusts nothing in the index: a file that is not a regular file, too
  large, not JSON or of the wrong shape is ignored with a warning, and so is each entry that
  is not a valid key with a well-typed record; the files it covered are then downloaded again.
  :func:`remove_file` deletes only a regular file, inside the cache, that is still the one
  the index recorded (same size and mtime).

The root itself (``cache_dir``) may be a link: the user chose it.

Examples:
    >>> key_problem("config.json") is None, key_problem("a/../b"), key_problem(".tforge-fetch.json")
    (True, 'an empty, `.` or `..` path segment', 'the name `.tforge-fetch.json`, which the cache uses for its own files')
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Collection
from pathlib import Path

from template_forge.errors import DataError
from template_forge.io import read_regular

INDEX_NAME = ".tforge-fetch.json"
TMP_SUFFIX = ".tforge-tmp"
_NAME_MAX, _PATH_MAX = 255, 4096  # the usual POSIX limits, when pathconf cannot tell
_TMP_NAME_BYTES = 2 + 16 * 4 + 8 + len(TMP_SUFFIX)  # temp_prefix (16 chars, ≤ 4 bytes each) + mkstemp's 8
_INDEX_MAX_BYTES = 16 << 20  # ~100k entries; a larger "index" is not one we wrote


# ----------------------------------------------------------------------------- keys as local paths
def key_problem(key: str, *, name_max: int | None = None) -> str | None:
    """Why the relative, ``/``-separated ``key`` cannot be a file under a local folder, or None.

    Args:
        key: an object key relative to the fetched prefix (or an index entry).
        name_max: the longest name in bytes, or None to skip the length check.

    Examples:
        >>> key_problem("a/b"), key_problem("a\\x00b"), key_problem("é" * 200, name_max=255)
        (None, "the control character '\\\\x00'", "a 400-byte name, over this filesystem's limit of 255 bytes (NAME_MAX)")
    """
    if key.endswith("/"):
        return "a trailing `/` but data in it (a folder marker must be empty)"
    parts = key.split("/")
    for part in parts:
        problem = component_problem(part, name_max)
        if problem:
            return problem
    if parts[-1] == INDEX_NAME or parts[-1].endswith(TMP_SUFFIX):
        return f"the name `{parts[-1]}`, which the cache uses for its own files"
    return None


def component_problem(part: str, name_max: int | None = None) -> str | None:
    """Why ``part`` cannot be one file or folder name, or None (see :func:`key_problem`)."""
    if part in ("", ".", ".."):
        return "an empty, `.` or `..` path segment"
    control = next((char for char in part if unicodedata.category(char) == "Cc"), None)
    if control is not None:  # NUL cannot be in a path at all; the rest garble terminals and logs
        return f"the control character {ascii(control)}"
    if name_max is None:
        return None
    try:
        size = len(os.fsencode(part))
    except UnicodeEncodeError:
        return f"characters the filesystem encoding ({sys.getfilesystemencoding()}) cannot write"
    if size > name_max:
        return f"a {size}-byte name, over this filesystem's limit of {name_max} bytes (NAME_MAX)"
    return None


def check_keys(keys: Collection[str], *, root: Path, local_dir: Path, url: str, what: str) -> None:
    """Raise unless every key in ``keys`` can be its own file under ``local_dir``.

    Run on the whole listing before anything is written, so a bad key leaves no trace.

    Raises:
        DataError: the first key that cannot be a local file, or the first pair of keys that
            cannot both be (a file that is also a folder; one file for two keys).
    """
    name_max, path_max = _limits(local_dir)
    for part in local_dir.relative_to(root).parts:
        problem = component_problem(part, name_max)
        if problem:
            raise DataError(f"{what}: {url}: the prefix cannot be a local folder: it has {problem}. "
                            f"Copy the objects to a shorter prefix (aws s3 cp --recursive).")
    for key in sorted(keys):
        problem = key_problem(key, name_max=name_max) or _path_problem(local_dir / key, path_max)
        if problem:
            raise DataError(f"{what}: {url}: key `{show(key)}` cannot be stored as a local file: it has {problem}. "
                            f"Rename or delete the object (aws s3 mv / aws s3 rm), or fetch another prefix.")
    _check_layout(keys, url=url, what=what)


def _check_layout(keys: Collection[str], *, url: str, what: str) -> None:
    """Refuse two keys for one local file, and a key that is also another key's folder."""
    files: dict[str, str] = {}
    for key in sorted(keys):
        other = files.setdefault(_fold(key), key)
        if other != key:
            raise DataError(f"{what}: {url}: keys `{show(other)}` and `{show(key)}` would be the same local file "
                            f"(names are compared ignoring case and Unicode normalization, as on macOS and Windows). "
                            f"Rename one of them.")
    for key in sorted(keys):
        parts = key.split("/")
        for end in range(1, len(parts)):
            folder = files.get(_fold("/".join(parts[:end])))
            if folder is not None:
                raise DataError(f"{what}: {url}: key `{show(folder)}` is an object and also the folder of "
                                f"`{show(key)}`; a local path cannot be both a file and a folder. Rename one of them.")


def _fold(key: str) -> str:
    return unicodedata.normalize("NFC", key).casefold()


def _path_problem(path: Path, path_max: int) -> str | None:
    """``path`` (or its temporary sibling) is too long for the filesystem."""
    parent = len(os.fsencode(os.path.abspath(path.parent)))
    length = parent + 1 + max(len(os.fsencode(path.name)), _TMP_NAME_BYTES)
    if length >= path_max:  # PATH_MAX counts the terminating NUL
        return (f"a local path of {length} bytes (with room for its temporary name), over this filesystem's "
                f"limit of {path_max} bytes (PATH_MAX); a shorter TFORGE_CACHE_DIR may help")
    return None


def _limits(folder: Path) -> tuple[int, int]:
    """``NAME_MAX`` and ``PATH_MAX`` of the filesystem ``folder`` is (or will be) on."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return _pathconf(probe, "PC_NAME_MAX", _NAME_MAX), _pathconf(probe, "PC_PATH_MAX", _PATH_MAX)


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or the name is unknown
        return default
    return value if value > 0 else default  # -1: no fixed limit


def show(key: str) -> str:
    r"""``key`` with control characters escaped, for messages.

    Examples:
        >>> show("a\x00b\x1b")
        'a\\x00b\\x1b'
    """
    return "".join(ascii(char)[1:-1] if unicodedata.category(char) == "Cc" else char for char in key)


def temp_prefix(name: str) -> str:
    """The prefix of the temporary file a download of ``name`` goes to (bounded, see _TMP_NAME_BYTES)."""
    return f".{name[:16]}."


# ----------------------------------------------------------------------------- the cache, never through links
def make_folders(root: Path, folder: Path, *, where: str) -> None:
    """Create ``folder`` and the folders above it up to ``root``, refusing links and files in the way."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{where}: cannot create the cache folder {root} ({err.strerror}). Check it, or set "
                        f"TFORGE_CACHE_DIR to a folder you can write.") from None
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        try:
            os.mkdir(current)
            continue
        except FileExistsError:
            pass
        except OSError as err:
            raise DataError(f"{where}: cannot create {current} ({err.strerror}). Check the cache folder's "
                            f"permissions, or set TFORGE_CACHE_DIR to another folder.") from None
        _refuse_foreign(current, where=where, wanted="a folder")
    check_inside(root, folder, where=where)


def _refuse_foreign(path: Path, *, where: str, wanted: str) -> None:
    """Raise unless ``path`` is a real folder (``wanted`` is what the cache puts there)."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        return
    found = f"a symbolic link (to {os.readlink(path)})" if stat.S_ISLNK(mode) else "a file"
    raise DataError(f"{where}: the cache has {found} at {path}, where {wanted} goes; the cache never writes "
                    f"through links or over files it did not make. Remove it (rm {path}) and run again.")


def real_folder(root: Path, folder: Path) -> bool:
    """Whether every component below ``root`` down to ``folder`` is a real folder (no link)."""
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return root.is_dir()


def check_inside(root: Path, path: Path, *, where: str) -> None:
    """Raise unless ``path`` resolves inside ``root`` (after the lstat walk, this only fails on a race)."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DataError(f"{where}: {path} resolves to {real}, outside the cache {real_root}; a link was planted "
                        f"in the cache while fetching. Remove it and run again.")


def regular_stat(root: Path, path: Path) -> os.stat_result | None:
    """``lstat(path)`` when it is a regular file reached without links from ``root``, else None."""
    if not real_folder(root, path.parent):
        return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def new_temp(folder: Path, name: str, *, where: str) -> Path:
    """An empty new file in ``folder`` (made with O_EXCL and O_NOFOLLOW) for ``name``'s download."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=TMP_SUFFIX, dir=folder)
    except OSError as err:
        raise DataError(f"{where}: cannot write in {folder} ({err.strerror}). Check the cache folder, or set "
                        f"TFORGE_CACHE_DIR to another folder.") from None
    os.close(fd)
    return Path(tmp)


def place(root: Path, tmp: Path, final: Path, *, where: str) -> None:
    """Rename ``tmp`` over ``final``: a link or file there is replaced, a folder is refused."""
    check_inside(root, final.parent, where=where)
    try:
        if stat.S_ISDIR(os.lstat(final).st_mode):
            raise DataError(f"{where}: the cache has a folder at {final}, where a downloaded file goes. Remove it "
                            f"(rm -r {final}) and run again.")
    except FileNotFoundError:
        pass
    os.replace(tmp, final)  # rename(2) never follows a link at the destination


def remove_file(root: Path, local_dir: Path, rel: str, entry: dict) -> None:
    """Delete the fetched file ``rel`` and the folders it leaves empty, if it is still ours.

    Only a regular file reached without links, with the size and mtime the index recorded,
    is deleted: anything else is someone else's (or planted) and is left, with a warning.
    """
    path = local_dir / rel
    info = regular_stat(root, path)
    if info is None:
        if os.path.lexists(path):
            warn(f"{path}: not deleted although its object is gone: not a regular file inside the cache.")
        return
    if (info.st_size, info.st_mtime_ns) != (entry["size"], entry["local_mtime_ns"]):
        warn(f"{path}: not deleted although its object is gone: it changed since it was fetched.")
        return
    path.unlink()
    for folder in path.parents:
        if folder == local_dir:
            break
        try:
            os.rmdir(folder)  # fails on a link (ENOTDIR) or a folder with other files: both kept
        except OSError:
            break


# ----------------------------------------------------------------------------- the index
def read_index(root: Path, local_dir: Path) -> dict[str, dict]:
    """The valid entries of ``local_dir``'s index; empty (every file checked again) when it is unusable."""
    path = local_dir / INDEX_NAME
    if not real_folder(root, local_dir):
        return {}
    try:
        raw = read_regular(path, limit=_INDEX_MAX_BYTES)  # no link, FIFO or giant followed or read
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warn(f"{path}: ignored ({err}); every file is checked again.")
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"{path}: ignored, not valid JSON ({err}); every file is checked again.")
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("version") == 1 else None
    if not isinstance(files, dict):
        warn(f"{path}: ignored, not a version 1 fetch index; every file is checked again.")
        return {}
    return _valid_entries(path, files)


def _valid_entries(path: Path, files: dict) -> dict[str, dict]:
    valid = {rel: entry for rel, entry in files.items()
             if isinstance(rel, str) and key_problem(rel) is None and _valid_entry(entry)}
    if len(valid) < len(files):
        bad = next(rel for rel in files if rel not in valid)
        warn(f"{path}: ignored {len(files) - len(valid)} invalid entries (such as `{show(str(bad))}`); "
             f"those files are checked again.")
    return valid


def _valid_entry(entry: object) -> bool:
    """A record as _fetch_file writes it: sizes and times as integers, an ETag or mtime as text."""
    if not isinstance(entry, dict):
        return False
    ints = [entry.get("size"), entry.get("local_mtime_ns")]
    if not all(type(value) is int and value >= 0 for value in ints):  # type(): bools are not sizes
        return False
    tags = set(entry) - {"size", "local_mtime_ns"}
    return tags in ({"etag"}, {"mtime"}) and all(isinstance(entry[tag], str) for tag in tags)


def write_index(root: Path, local_dir: Path, index: dict[str, dict], *, where: str) -> None:
    """Write ``local_dir``'s index whole, through a temporary file and a rename."""
    make_folders(root, local_dir, where=where)
    fd, tmp = tempfile.mkstemp(prefix=f"{INDEX_NAME}.", suffix=TMP_SUFFIX, dir=local_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": 1, "files": dict(sorted(index.items()))}, out, indent=1)
        place(root, Path(tmp), local_dir / INDEX_NAME, where=where)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- upload: the mirror image
def upload_files(source: Path) -> list[tuple[Path, str]]:
    """The regular files under the folder ``source`` and their relative keys, never leaving it.

    A link to a file inside ``source`` is uploaded as that file; a link that leads out of
    it, a link to a folder (it may loop), a FIFO, socket or device is refused: reading them
    would upload files from elsewhere, or hang. The cache's own files are skipped.

    Raises:
        DataError: the first such entry, or a folder that cannot be read, before any upload.
    """
    real_root = os.path.realpath(source)
    found = []
    for folder, dirs, names in os.walk(source, onerror=_unreadable):
        dirs.sort()
        for name in sorted(dirs):
            if os.path.islink(os.path.join(folder, name)):  # os.walk does not follow it: say so
                _refuse_upload(Path(folder, name), "a link to a folder (links to folders are not followed)")
        for name in sorted(names):
            path = Path(folder, name)
            if name == INDEX_NAME or name.endswith(TMP_SUFFIX):
                continue
            key = path.relative_to(source).as_posix()
            _check_upload_file(path, key, real_root)
            found.append((path, key))
    return found


def _check_upload_file(path: Path, key: str, real_root: str) -> None:
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        _refuse_upload(path, f"a link to {real}, outside the folder being uploaded")
    if not os.path.isfile(real):
        _refuse_upload(path, "not a regular file (a FIFO, socket, device or dangling link)")
    problem = key_problem(key)
    if problem:
        _refuse_upload(path, f"a name that fetch would refuse: {problem}")


def _refuse_upload(path: Path, found: str) -> None:
    raise DataError(f"upload: {path}: expected a regular file inside the folder being uploaded, found {found}. "
                    f"Copy what it points to into the folder (cp -L), or remove it.")


def _unreadable(err: OSError) -> None:
    raise DataError(f"upload: {err.filename}: cannot read this folder ({err.strerror}). Check its permissions.")
