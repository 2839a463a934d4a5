"""Bring-your-own weights: a local path, or an ``s3://bucket/prefix`` fetched into a local cache.

A local path (or ``file://`` URL) is checked and returned as it is, never copied. An S3 URL
is mirrored under ``cache_dir``, keeping the objects' relative layout::

    s3://bucket/models/llama/config.json            cache_dir/s3/bucket/models/llama/config.json
    s3://bucket/models/llama/model.safetensors  →   cache_dir/s3/bucket/models/llama/model.safetensors
                                                    cache_dir/s3/bucket/models/llama/.tforge-fetch.json

``.tforge-fetch.json`` records, per file, the remote size and ETag (or modification time when
the store gives no ETag) and the local file's size and mtime. A re-fetch lists the prefix once
and downloads only the objects whose record differs; files it had fetched that disappeared
remotely are removed. Each download goes to a hidden temporary file in the same folder and is
renamed into place only once complete, and a file enters the index only after that rename,
so an interrupted fetch never leaves a half file under its final name. Every key is checked
as a local path before anything is written, and the cache never follows a link planted in
it nor trusts its index (see :mod:`tforge_trainer.remote_paths`).

Credentials, region and profile come from the environment and ``~/.aws`` as botocore reads
them; a custom endpoint (MinIO, Ceph, moto…) from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``. fsspec and s3fs are imported only when an ``s3://`` URL is used.

Examples:
    >>> is_remote("s3://bucket/models/llama"), is_remote("models/llama")
    (True, False)
    >>> fetch(".", cache_dir="unused")
    PosixPath('.')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from template_forge.errors import DataError
from tforge_trainer import remote_paths as paths
from tforge_trainer.remote_paths import INDEX_NAME

__all__ = ["INDEX_NAME", "fetch", "is_remote", "upload"]
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_S3_SCHEMES = ("s3", "s3a")
_NO_BUCKET = ("bucket `{bucket}` does not exist at {{endpoint}}. Check the name (aws s3 ls), and set "
              "AWS_ENDPOINT_URL_S3 if the bucket lives on another S3-compatible store.")
_CREDENTIALS_HINT = ("Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile in ~/.aws), "
                     "and for a non-AWS store its endpoint in AWS_ENDPOINT_URL_S3")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL to fetch (``s3://…``, any ``scheme://``) rather than a local path.

    ``file://`` URLs are local.

    Examples:
        >>> [is_remote(p) for p in ("s3://b/p", "gs://b/p", "file:///tmp/x", "/tmp/x", "C:/x")]
        [True, True, False, False, False]
    """
    match = _SCHEME.match(os.fspath(path))
    return bool(match) and match.group(1).lower() != "file"


def fetch(path: str | os.PathLike, *, cache_dir: str | Path, what: str = "weights", progress: bool = True,
          storage_options: dict | None = None) -> Path:
    """A local path to ``path``: checked as is when local, downloaded into ``cache_dir`` when on S3.

    Args:
        path: a local file or folder, a ``file://`` URL, ``s3://bucket/prefix`` (every object
            under the prefix, e.g. a ``save_pretrained`` folder or a PEFT adapter) or
            ``s3://bucket/key`` (one object).
        cache_dir: where S3 objects are mirrored, as ``cache_dir/s3/bucket/prefix``.
        what: what the path is, for error messages ("weights", "adapter", …).
        progress: show a byte progress bar on stderr (only when stderr is a terminal).
        storage_options: extra keyword arguments for ``s3fs.S3FileSystem`` (``profile``,
            ``client_kwargs``, ``config_kwargs``, …).

    Returns:
        The local path: the folder for a prefix, the file for a single object.

    Raises:
        DataError: the local path is missing, the URL is malformed or unsupported, the bucket
            or prefix is empty or missing, a key cannot be a local file (checked before any
            download), the cache has a link or foreign file where a download goes, or the
            store is unreachable or refuses access.

    Examples:
        >>> fetch("file:///tmp", cache_dir="unused")
        PosixPath('/tmp')
        >>> fetch("no/such/model", cache_dir="unused", what="adapter")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        template_forge.errors.DataError: adapter: no/such/model: no such file or folder...
    """
    if not is_remote(path):
        return _local(path, what, hint="Check the path, or give an s3://bucket/prefix URL to fetch it")
    url = _S3Url.parse(os.fspath(path), what)
    fs = _s3_filesystem(storage_options, what=what)
    with _s3_errors(url, fs, what=what, missing=_NO_BUCKET.format(bucket=url.bucket)):
        remote_dir, objects = _list(fs, url, what)
    root = Path(cache_dir)
    local_dir = root / "s3" / url.bucket / remote_dir.key
    paths.check_keys(objects, root=root, local_dir=local_dir, url=str(remote_dir), what=what)
    _sync(fs, remote_dir, (root, local_dir), objects, prune=remote_dir == url, what=what, progress=progress)
    return local_dir if remote_dir == url else local_dir / next(iter(objects))


def upload(local_dir: str | Path, url: str, *, storage_options: dict | None = None) -> None:
    """Upload a local folder to ``s3://bucket/prefix`` (or one file to ``s3://bucket/key``).

    Objects keep the folder's relative layout; fetch's own index and temporary files are
    skipped. Existing objects with the same keys are overwritten; others are left alone.
    Links are never followed out of the folder (see :func:`remote_paths.upload_files`).

    Raises:
        DataError: the local path is missing or empty, holds a link out of it, a link to a
            folder or a special file, the bucket does not exist, or the store is unreachable
            or refuses access.

    Examples:
        >>> upload("no/such/folder", "s3://bucket/prefix")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        template_forge.errors.DataError: upload: no/such/folder: no such file or folder...
    """
    source = _local(local_dir, "upload", hint="Check the path of the folder to upload")
    target = _S3Url.parse(url, "upload")
    if source.is_file():
        pairs = [(source, target if target.key else target.child(source.name))]
    else:
        pairs = [(file, target.child(key)) for file, key in paths.upload_files(source)]
    if not pairs:
        raise DataError(f"upload: {source}: no files to upload. Give a folder with files in it.")
    fs = _s3_filesystem(storage_options, what="upload")
    with _s3_errors(target, fs, what="upload", missing=_NO_BUCKET.format(bucket=target.bucket)):
        for file, remote in pairs:
            fs.put_file(str(file), remote.fs_path)


# ----------------------------------------------------------------------------- local paths and URLs
def _local(path: str | os.PathLike, what: str, *, hint: str) -> Path:
    text = os.fspath(path)
    local = Path(unquote(urlsplit(text).path)) if text.lower().startswith("file://") else Path(text).expanduser()
    if not local.exists():
        where = "" if local.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(f"{what}: {text}: no such file or folder{where}. {hint}.")
    return local


@dataclass(frozen=True)
class _S3Url:
    """``s3://bucket/key``, with ``key`` free of leading and trailing slashes."""

    scheme: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str, what: str) -> _S3Url:
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in _S3_SCHEMES:
            raise DataError(f"{what}: {url}: only local paths and s3:// URLs are supported, not {scheme}://. "
                            f"Download it first and give the local path, or copy it to S3.")
        bucket, _, key = rest.partition("/")
        parsed = cls(scheme.lower(), bucket, key.strip("/"))
        if not bucket:
            raise DataError(f"{what}: {url}: no bucket name. Write s3://bucket/prefix.")
        problem = paths.component_problem(bucket) or (parsed.key and paths.key_problem(parsed.key))
        if problem:  # the bucket and key become local folders: cache_dir/s3/bucket/key
            raise DataError(f"{what}: {paths.show(url)}: this URL cannot be stored as a local path: it has "
                            f"{problem}. Fix the URL, or copy the objects to another prefix.")
        return parsed

    def __str__(self) -> str:
        return f"{self.scheme}://{self.fs_path}"

    @property
    def fs_path(self) -> str:
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def child(self, relative: str) -> _S3Url:
        return _S3Url(self.scheme, self.bucket, f"{self.key}/{relative}" if self.key else relative)

    def parent(self) -> _S3Url:
        return _S3Url(self.scheme, self.bucket, self.key.rpartition("/")[0])


# ----------------------------------------------------------------------------- talking to S3
def _s3_filesystem(storage_options: dict | None, *, what: str) -> Any:
    """An ``s3fs.S3FileSystem``, with the endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.

    The endpoint is passed explicitly because only recent botocore reads those variables.
    fsspec's instance cache is bypassed: it keys on the arguments only, so it would keep a
    client made with other credentials. Our cache keys on the arguments and every AWS_*
    variable too (a client takes up to half a second to set up).
    """
    try:
        import fsspec
        import s3fs  # noqa: F401  (fsspec finds it by name; import it here for a clear error)
    except ImportError as err:
        raise DataError(f"{what}: s3:// URLs need s3fs, which is not installed. "
                        f"Install it with: pip install 'template-forge[train]'") from err
    options = dict(storage_options or {})
    client_kwargs = dict(options.get("client_kwargs") or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not options.get("endpoint_url") and not client_kwargs.get("endpoint_url"):
        client_kwargs["endpoint_url"] = endpoint
    options["client_kwargs"] = client_kwargs
    options.setdefault("use_listings_cache", False)  # every fetch must see the store as it is now
    key = _cache_key(options)
    if key is None or key not in _FILESYSTEMS:
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
        if key is None:
            return fs
        _FILESYSTEMS[key] = fs
    return _FILESYSTEMS[key]


_FILESYSTEMS: dict[str, Any] = {}


def _cache_key(options: dict) -> str | None:
    """The options, the AWS_* environment and the process (clients do not survive a fork)."""
    env = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
    try:
        text = json.dumps([os.getpid(), env, options], sort_keys=True)
    except TypeError:  # objects in storage_options (a session, a config): not cached
        return None
    return hashlib.sha256(text.encode()).hexdigest()  # no secrets kept in the clear


@contextlib.contextmanager
def _s3_errors(url: _S3Url, fs: Any, *, what: str, missing: str) -> Iterator[None]:
    """Turn the store's user-facing failures into DataError; anything else propagates.

    ``missing`` is the message for "not found" (s3fs's FileNotFoundError), with ``{endpoint}``.
    """
    from botocore import exceptions as boto

    endpoint = (getattr(fs, "endpoint_url", None) or getattr(fs, "client_kwargs", {}).get("endpoint_url")
                or "the AWS default endpoint")
    where = f"{what}: {url}"
    try:
        yield
    except FileNotFoundError as err:
        raise DataError(f"{where}: {missing.format(endpoint=endpoint)}") from err
    except PermissionError as err:
        raise DataError(f"{where}: access denied by {endpoint} ({err}). Check that these credentials may "
                        f"list and read the bucket. {_CREDENTIALS_HINT}.") from err
    except (boto.NoCredentialsError, boto.PartialCredentialsError, boto.ProfileNotFound,
            boto.CredentialRetrievalError) as err:
        raise DataError(f"{where}: no usable AWS credentials ({err}). {_CREDENTIALS_HINT}.") from err
    except boto.ConnectionError as err:
        raise DataError(f"{where}: cannot reach {endpoint} ({err}). Check the network, and "
                        f"AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) if you use a custom endpoint.") from err
    except ValueError as err:
        if not str(err).startswith("Invalid endpoint"):
            raise
        raise DataError(f"{where}: {err}. Write the endpoint as a full URL, e.g. "
                        f"AWS_ENDPOINT_URL_S3=http://localhost:9000.") from err


def _list(fs: Any, url: _S3Url, what: str) -> tuple[_S3Url, dict[str, dict]]:
    """The folder ``url`` names and its objects by relative path; one object's parent for a key.

    s3fs lists ``key/`` first and falls back to the object ``key`` itself, so a URL naming both
    a prefix and an object means the prefix. Zero-byte ``…/`` folder markers (S3 consoles make
    them) are skipped; the keys are checked as local paths by the caller, all at once.
    """
    found = {name: _sized(info, name, url, what) for name, info in fs.find(url.fs_path, detail=True).items()}
    if list(found) == [url.fs_path] and found[url.fs_path].get("type") == "file":
        return url.parent(), {url.key.rpartition("/")[2]: found[url.fs_path]}
    objects = {}
    for name, info in found.items():
        if info.get("type") != "file" or (name.endswith("/") and info["size"] == 0):
            continue
        if not name.startswith(f"{url.fs_path}/"):  # exactly one "/": `m//x` must not become `m/x`
            raise DataError(f"{what}: {url}: the store listed `{paths.show(name)}`, which is not under this "
                            f"prefix. Check the endpoint (AWS_ENDPOINT_URL_S3): it does not behave like S3.")
        objects[name[len(url.fs_path) + 1:]] = info
    if not objects:
        raise DataError(f"{what}: {url}: no objects under this prefix. Check the bucket and prefix "
                        f"(aws s3 ls {url}/).")
    return url, objects


def _sized(info: dict, name: str, url: _S3Url, what: str) -> dict:
    """``info`` with its ``size`` as an int; a store that lists no sane size is refused."""
    size = info.get("size") or 0
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DataError(f"{what}: {url}: the store listed `{paths.show(name)}` with size {paths.show(repr(size)[:40])}, "
                        "not a byte count. Check the endpoint (AWS_ENDPOINT_URL_S3): it does not behave like S3.")
    return {**info, "size": size}


def _download(fs: Any, remote: str, local: Path, callback: Any) -> None:
    """Copy one object to ``local``; a module function so tests can interrupt it."""
    fs.get_file(remote, str(local), callback=callback)


# ----------------------------------------------------------------------------- the local mirror
def _sync(fs: Any, remote_dir: _S3Url, dirs: tuple[Path, Path], objects: dict[str, dict], *, prune: bool,
          what: str, progress: bool) -> None:
    """Bring ``local_dir`` in line with ``objects``: download what changed, drop what vanished.

    ``dirs`` is ``(root, local_dir)``: the cache and the folder, inside it, that mirrors
    ``remote_dir``. With ``prune`` off (a single object), other entries of the index are kept.
    """
    root, local_dir = dirs
    where = f"{what}: {remote_dir}"
    index = paths.read_index(root, local_dir)
    stale = [rel for rel in index if rel not in objects] if prune else []
    for rel in stale:
        paths.remove_file(root, local_dir, rel, index.pop(rel))
    todo = [rel for rel in sorted(objects)
            if not _up_to_date(paths.regular_stat(root, local_dir / rel), index.get(rel), objects[rel])]
    if stale and not todo:
        paths.write_index(root, local_dir, index, where=where)
    if not todo:
        return
    total = sum(int(objects[rel]["size"]) for rel in todo)
    print(f"fetching {remote_dir} ({len(todo)} file{'s' * (len(todo) != 1)}, {_human(total)}) → {local_dir}",
          file=sys.stderr)
    with _progress_bar(total, enabled=progress) as bar:
        for rel in todo:
            final = local_dir / rel
            paths.make_folders(root, final.parent, where=where)
            index[rel] = _fetch_file(fs, remote_dir.child(rel), (root, final), objects[rel], bar=bar, what=what)
            paths.write_index(root, local_dir, index, where=where)  # after each file: an interrupted fetch resumes


def _fetch_file(fs: Any, remote: _S3Url, dest: tuple[Path, Path], info: dict, *, bar: Any, what: str) -> dict:
    """Download one object beside ``final`` (in ``dest = (root, final)``) and rename it into place.

    Returns its index entry. ``final``'s folder was made by ``make_folders`` (no links on the
    way); the temporary file is new (``O_EXCL | O_NOFOLLOW``), and the rename replaces
    whatever ``final`` was, a planted link included, without following it.
    """
    root, final = dest
    tmp = paths.new_temp(final.parent, final.name, where=f"{what}: {remote}")
    try:
        with _s3_errors(remote, fs, what=what, missing="the object disappeared from {endpoint} while fetching. "
                                                       "Run again."):
            _download(fs, remote.fs_path, tmp, _bar_callback(bar))
        size, expected = os.lstat(tmp).st_size, int(info["size"])
        if size != expected:
            raise DataError(f"{what}: {remote}: got {size} bytes, but the listing said {expected}; the object "
                            f"changed while fetching. Run again.")
        paths.place(root, tmp, final, where=f"{what}: {remote}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {**_fingerprint(info), "local_mtime_ns": os.lstat(final).st_mtime_ns}


def _fingerprint(info: dict) -> dict:
    """What identifies an object's content: size and ETag, or size and mtime without an ETag."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return {"size": int(info["size"]), "etag": str(etag)}
    mtime = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    return {"size": int(info["size"]), "mtime": str(mtime)}


def _up_to_date(local: os.stat_result | None, entry: dict | None, info: dict) -> bool:
    """The index matches the remote object and the local file (its lstat, None when it is not a
    regular file reached without links) is still the one fetched."""
    if local is None or entry is None:
        return False
    if {k: v for k, v in entry.items() if k != "local_mtime_ns"} != _fingerprint(info):
        return False
    return local.st_size == entry["size"] and local.st_mtime_ns == entry["local_mtime_ns"]


# ----------------------------------------------------------------------------- progress
def _progress_bar(total: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                desc="fetching", disable=not enabled or not sys.stderr.isatty())


def _bar_callback(bar: Any) -> Any:
    """An fsspec callback that adds each chunk's bytes to one bar shared by all files."""
    from fsspec.callbacks import Callback

    class _ToBar(Callback):
        def set_size(self, size: int) -> None:  # per-file size: the bar counts all files
            self.size = size

        def relative_update(self, inc: int = 1) -> None:
            bar.update(inc)

    return _ToBar()


def _human(size: int) -> str:
    """A byte count in decimal units, as in the "fetching …" line.

    Examples:
        >>> _human(512), _human(1_234_567), _human(7_000_000_000)
        ('512 B', '1.2 MB', '7.0 GB')
    """
    if size < 1000:
        return f"{size} B"
    value, unit = float(size), "B"
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000:
            break
    return f"{value:.1f} {unit}"
