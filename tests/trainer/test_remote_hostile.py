"""Hostile S3 keys, planted links and damaged indexes never escape the cache (moto on 127.0.0.1).

Every test here plants something outside the cache (a sentinel file or folder) and asserts
it is untouched: nothing is written through a link, nothing outside is deleted, and a key
that cannot be a local file is refused before anything is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_remote import tree, write_model

from template_forge.errors import DataError
from tforge_trainer import remote, remote_paths
from tforge_trainer.remote import INDEX_NAME, fetch, upload

SETTINGS = {"max_examples": int(os.environ.get("TFORGE_EXAMPLES", 300)), "deadline": None,
            "derandomize": not os.environ.get("TFORGE_RANDOM")}


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Every remote path downloaded (the real download still runs)."""
    seen: list[str] = []
    real = remote._download
    monkeypatch.setattr(remote, "_download", lambda fs, path, local, cb: (seen.append(path), real(fs, path, local, cb)))
    return seen


@pytest.fixture
def model(s3_bucket, tmp_path):
    """``(url, files, local)``: a model at ``s3://<bucket>/m`` and where its cache copy goes."""
    files = write_model(tmp_path / "src")
    upload(tmp_path / "src", f"s3://{s3_bucket}/m")
    return f"s3://{s3_bucket}/m", files, tmp_path / "cache" / "s3" / s3_bucket / "m"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the cache with a sentinel file in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "sentinel.txt").write_bytes(b"keep me")
    return folder


def put(s3_server, bucket: str, keys: dict[str, bytes]) -> None:
    client = s3_server.client()
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def everything(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: file bytes, link targets, "dir" for folders."""
    return {p.relative_to(folder).as_posix(): (f"-> {os.readlink(p)}" if p.is_symlink() else
                                               "dir" if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


# ----------------------------------------------------------------------------- keys that cannot be local files
HOSTILE_KEYS = {
    "file and folder": ({"a": b"1", "a/b": b"2"}, r"key `a` is an object and also the folder of `a/b`; a local path "
                                                  r"cannot be both a file and a folder\. Rename one of them"),
    "file and folder, by case": ({"A": b"1", "a/b": b"2"}, r"key `A` is an object and also the folder of `a/b`"),
    "long name": ({"x" * 300: b"1"}, r"key `x{300}` cannot be stored as a local file: it has a 300-byte name, over "
                                     r"this filesystem's limit of 255 bytes \(NAME_MAX\)\. Rename or delete the object"),
    "long in bytes": ({"€" * 100: b"1"}, r"key `€{100}` cannot be stored as a local file: it has a 300-byte name"),
    "NUL": ({"ok.json": b"{}", "a\x00b": b"1"}, r"key `a\\x00b` cannot be stored .*the control character '\\x00'"),
    "escape": ({"a\x1b[2Jb": b"1"}, r"key `a\\x1b\[2Jb` cannot be stored .*the control character '\\x1b'"),
    "C1 control": ({"a\x85b": b"1"}, r"key `a\\x85b` cannot be stored .*the control character '\\x85'"),
    "leading slash": ({"/x": b"1"}, r"key `/x` cannot be stored as a local file: it has an empty, `\.` or `\.\.` path"),
    "double slash": ({"d//e": b"1", "d/e": b"2"}, r"key `d//e` cannot be stored .*an empty, `\.` or `\.\.` path"),
    "dot": ({"./x": b"1"}, r"key `\./x` cannot be stored"),
    "dot dot": ({"a/../../../x": b"1"}, r"key `a/\.\./\.\./\.\./x` cannot be stored"),
    "case": ({"Config.json": b"1", "config.json": b"2"},
             r"keys `Config\.json` and `config\.json` would be the same local file \(names are compared ignoring "
             r"case and Unicode normalization, as on macOS and Windows\)\. Rename one of them"),
    "normalization": ({"caf\u00e9": b"1", "cafe\u0301": b"2"}, "keys `cafe\u0301` and `caf\u00e9` would be the same local file"),
    "non-empty folder marker": ({"tr/": b"data"}, r"key `tr/` cannot be stored .*a trailing `/` but data in it"),
    "index name": ({INDEX_NAME: b"{}"}, rf"key `{re.escape(INDEX_NAME)}` .*the name `{re.escape(INDEX_NAME)}`, "
                                        r"which the cache uses for its own files"),
    "temporary name": ({"w.tforge-tmp": b"1"}, r"key `w\.tforge-tmp` cannot be stored .*the name `w\.tforge-tmp`, which the cache"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_KEYS))
def test_a_key_that_cannot_be_a_local_file_is_refused_before_any_download(kind, s3_server, s3_bucket, tmp_path,
                                                                          downloads):
    keys, message = HOSTILE_KEYS[kind]
    put(s3_server, s3_bucket, {f"m/{key}": body for key, body in keys.items()})
    with pytest.raises(DataError, match=rf"^adapter: s3://{s3_bucket}/m: {message}"):
        fetch(f"s3://{s3_bucket}/m", cache_dir=tmp_path / "cache", what="adapter", progress=False)
    assert downloads == [] and not (tmp_path / "cache").exists()


def test_a_path_past_path_max_is_refused_before_any_download(s3_server, s3_bucket, tmp_path, downloads):
    cache = tmp_path.joinpath(*["d" * 200] * (3700 // 201))  # a deep cache: the key's 600 bytes pass PATH_MAX
    cache.mkdir(parents=True)
    put(s3_server, s3_bucket, {"m/" + "/".join(["k" * 200] * 3): b"1"})
    with pytest.raises(DataError, match=r"key `k{200}/k{200}/k{200}` cannot be stored as a local file: it has a local "
                                        r"path of \d+ bytes \(with room for its temporary name\), over this "
                                        r"filesystem's limit of 4096 bytes \(PATH_MAX\)"):
        fetch(f"s3://{s3_bucket}/m", cache_dir=cache, progress=False)
    assert downloads == [] and list(cache.iterdir()) == []


def test_a_prefix_that_cannot_be_a_local_folder_is_refused(s3_server, s3_bucket, tmp_path, downloads):
    put(s3_server, s3_bucket, {f"{'p' * 300}/w.bin": b"1"})
    with pytest.raises(DataError, match=r"the prefix cannot be a local folder: it has a 300-byte name"):
        fetch(f"s3://{s3_bucket}/{'p' * 300}", cache_dir=tmp_path / "cache", progress=False)
    assert downloads == [] and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("url", ["s3://b/m/../../x", "s3://../x", "s3://b/m/a\x00b", "s3://b/./m"])
def test_a_url_that_cannot_be_a_local_path_is_refused_before_listing(url, tmp_path):
    with pytest.raises(DataError, match=r"^weights: s3://.*: this URL cannot be stored as a local path: it has "
                                        r"(an empty, `\.` or `\.\.` path segment|the control character '\\x00')"):
        fetch(url, cache_dir=tmp_path)


def test_empty_folder_markers_are_skipped_at_any_depth(s3_server, s3_bucket, tmp_path):
    put(s3_server, s3_bucket, {"m/": b"", "m/sub/": b"", "m/sub/w.bin": b"w", "m/empty/": b""})
    local = fetch(f"s3://{s3_bucket}/m", cache_dir=tmp_path, progress=False)
    assert everything(local) == {INDEX_NAME: (local / INDEX_NAME).read_bytes(), "sub": "dir", "sub/w.bin": b"w"}


# ----------------------------------------------------------------------------- links planted in the cache
@pytest.mark.parametrize("rel", ["config.json", "adapter/adapter_config.json"])
def test_a_file_link_where_a_download_goes_is_replaced_not_written_through(rel, model, outside):
    url, files, local = model
    (local / rel).parent.mkdir(parents=True)
    (local / rel).symlink_to(outside / "sentinel.txt")
    assert tree(fetch(url, cache_dir=local.parents[2], progress=False)) == files
    assert not (local / rel).is_symlink()
    assert everything(outside) == {"sentinel.txt": b"keep me"}


@pytest.mark.parametrize("link", ["s3", "s3/{bucket}", "s3/{bucket}/m", "s3/{bucket}/m/adapter"])
def test_a_folder_link_on_the_way_is_refused_and_nothing_is_written_through_it(link, model, outside, downloads):
    url, _, local = model
    cache = local.parents[2]
    planted = cache / link.format(bucket=url.split("/")[2])
    planted.parent.mkdir(parents=True)
    planted.symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match=rf"^weights: {re.escape(url)}(/adapter/adapter_config\.json)?: the cache has a "
                                        rf"symbolic link \(to {re.escape(str(outside))}\) at {re.escape(str(planted))}, "
                                        r"where a folder goes; .* Remove it \(rm "):
        fetch(url, cache_dir=cache, progress=False)
    assert everything(outside) == {"sentinel.txt": b"keep me"}
    assert planted.is_symlink()


def test_a_link_replacing_a_fetched_file_is_not_trusted_as_up_to_date(model, outside):
    url, files, local = model
    fetch(url, cache_dir=local.parents[2], progress=False)
    (local / "config.json").unlink()
    (local / "config.json").symlink_to(outside / "sentinel.txt")
    assert tree(fetch(url, cache_dir=local.parents[2], progress=False)) == files
    assert everything(outside) == {"sentinel.txt": b"keep me"}


def test_a_file_where_a_folder_goes_is_refused(model):
    url, _, local = model
    local.mkdir(parents=True)
    (local / "adapter").write_bytes(b"mine")
    with pytest.raises(DataError, match=r"the cache has a file at .*/m/adapter, where a folder goes"):
        fetch(url, cache_dir=local.parents[2], progress=False)
    assert (local / "adapter").read_bytes() == b"mine"


def test_a_folder_where_a_file_goes_is_refused(model):
    url, _, local = model
    (local / "config.json").mkdir(parents=True)
    (local / "config.json" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"the cache has a folder at .*/m/config\.json, where a downloaded file goes"):
        fetch(url, cache_dir=local.parents[2], progress=False)
    assert (local / "config.json" / "notes.txt").read_text() == "mine"


def test_a_cache_root_that_is_a_link_is_the_users_choice(model, tmp_path):
    url, files, _ = model
    (tmp_path / "big-disk").mkdir()
    (tmp_path / "cache-link").symlink_to(tmp_path / "big-disk", target_is_directory=True)
    assert tree(fetch(url, cache_dir=tmp_path / "cache-link", progress=False)) == files
    assert (tmp_path / "big-disk" / "s3").is_dir()


# ----------------------------------------------------------------------------- pruning and a hostile index
def test_pruning_never_follows_a_folder_link(model, s3_server, outside):
    """The pruned file's folder is swapped for a link to a copy with the same size and mtime."""
    url, files, local = model
    fetch(url, cache_dir=local.parents[2], progress=False)
    fetched = local / "adapter" / "adapter_config.json"
    decoy = outside / "adapter_config.json"
    decoy.write_bytes(fetched.read_bytes())
    os.utime(decoy, ns=(fetched.stat().st_atime_ns, fetched.stat().st_mtime_ns))
    fetched.unlink()
    (local / "adapter").rmdir()
    (local / "adapter").symlink_to(outside, target_is_directory=True)
    s3_server.client().delete_object(Bucket=url.split("/")[2], Key="m/adapter/adapter_config.json")
    fetch(url, cache_dir=local.parents[2], progress=False)
    assert decoy.read_bytes() == files["adapter/adapter_config.json"] and (outside / "sentinel.txt").exists()


def test_pruning_keeps_a_file_changed_since_it_was_fetched(model, s3_server, capsys):
    url, _, local = model
    fetch(url, cache_dir=local.parents[2], progress=False)
    (local / "tokenizer.json").write_bytes(b"edited by hand, then the object was deleted")
    s3_server.client().delete_object(Bucket=url.split("/")[2], Key="m/tokenizer.json")
    fetch(url, cache_dir=local.parents[2], progress=False)
    assert (local / "tokenizer.json").read_bytes().startswith(b"edited")
    assert "tokenizer.json: not deleted although its object is gone: it changed since" in capsys.readouterr().err
    assert "tokenizer.json" not in json.loads((local / INDEX_NAME).read_text())["files"]


def hostile_entries(outside: Path, local: Path) -> dict[str, dict]:
    """Index entries naming the sentinel in every way, each with its true size and mtime."""
    info = (outside / "sentinel.txt").stat()
    entry = {"size": info.st_size, "etag": '"x"', "local_mtime_ns": info.st_mtime_ns}
    up = os.path.relpath(outside / "sentinel.txt", local)
    return {up: entry, str(outside / "sentinel.txt"): entry, f"adapter/../{up}": entry, "./" + up: entry,
            f"adapter//{up}": entry}


@pytest.mark.parametrize("kind", ["escaping entries", "invalid JSON", "not an object", "files a list", "wrong types",
                                  "link to outside", "FIFO", "huge"])
def test_a_hostile_index_deletes_nothing_outside_and_the_cache_is_verified_again(kind, model, outside, downloads,
                                                                                 capsys):
    url, files, local = model
    fetch(url, cache_dir=local.parents[2], progress=False)
    downloads.clear()
    index = local / INDEX_NAME
    plant_index(kind, index, outside, local)
    before = everything(outside)
    assert tree(fetch(url, cache_dir=local.parents[2], progress=False)) == files
    assert everything(outside) == before and (outside / "sentinel.txt").read_bytes() == b"keep me"
    assert sorted(path.split("/m/", 1)[1] for path in downloads) == sorted(files)  # every file checked again
    assert re.search(rf"warning: {re.escape(str(index))}: ignored", capsys.readouterr().err)
    assert not index.is_symlink() and sorted(json.loads(index.read_text())["files"]) == sorted(files)


def plant_index(kind: str, index: Path, outside: Path, local: Path) -> None:
    """Replace the good ``.tforge-fetch.json`` at ``index`` with a damaged or hostile one."""
    good = index.read_text()
    index.unlink()
    entries = {"escaping entries": hostile_entries(outside, local),
               "wrong types": {"config.json": {"size": "43", "etag": 1, "local_mtime_ns": True}, "tokenizer.json": [],
                               "model.safetensors": {"size": 1, "etag": "x", "local_mtime_ns": 1, "extra": 1}}}
    texts = {"invalid JSON": '{"version": 1, "files": {', "not an object": "[1, 2]",
             "files a list": '{"version": 1, "files": ["config.json"]}', "huge": " " * (17 << 20)}
    if kind in entries:
        index.write_text(json.dumps({"version": 1, "files": entries[kind]}))
    elif kind in texts:
        index.write_text(texts[kind])
    elif kind == "link to outside":  # a good index, but through a link: the rewrite must not go there
        (outside / "index.json").write_text(good)
        index.symlink_to(outside / "index.json")
    else:
        os.mkfifo(index)  # reading it must not hang


def test_an_index_that_is_a_folder_is_refused_with_the_way_out(model, outside):
    url, _, local = model
    fetch(url, cache_dir=local.parents[2], progress=False)
    (local / INDEX_NAME).unlink()
    (local / INDEX_NAME).mkdir()
    with pytest.raises(DataError, match=rf"the cache has a folder at {re.escape(str(local / INDEX_NAME))}, where a "
                                        rf"downloaded file goes\. Remove it \(rm -r "):
        fetch(url, cache_dir=local.parents[2], progress=False)
    assert everything(outside) == {"sentinel.txt": b"keep me"}


# ----------------------------------------------------------------------------- properties of the key checks
GOOD_PARTS = ["a", "A", "b", "\u00e9", "e\u0301", "x" * 254, "c.json"]  # é twice: NFC and NFD
BAD_PARTS = [".", "..", "", "\x00", "\x1f", "\x85", "\u20ac" * 90, INDEX_NAME, "w.tforge-tmp"]
KEY_PARTS = st.sampled_from(GOOD_PARTS * 12 + BAD_PARTS)  # mostly good: collisions and file/folder pairs show up
KEYS = st.lists(st.lists(KEY_PARTS, min_size=1, max_size=3).map("/".join), min_size=1, max_size=6, unique=True)


@settings(**SETTINGS)
@given(keys=KEYS)
def test_keys_that_pass_the_check_can_all_be_written_inside_the_folder(keys):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local_dir = root / "s3" / "bucket" / "m"
        try:
            remote_paths.check_keys(keys, root=root, local_dir=local_dir, url="s3://bucket/m", what="weights")
        except DataError as err:
            assert re.match(r"weights: s3://bucket/m: (key|keys) `", str(err))
            return
        for key in keys:
            path = local_dir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x") as out:  # "x": two keys for one file would fail here
                out.write(key)
        real = os.path.realpath(local_dir)
        written = {os.path.relpath(p, real) for p in Path(real).rglob("*") if p.is_file()}
        assert written == {os.path.normpath(key) for key in keys}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
ENTRIES = st.dictionaries(st.one_of(KEYS.map(lambda keys: keys[0]), st.text(max_size=12)),
                          st.fixed_dictionaries({"size": st.integers(-1, 9), "local_mtime_ns": st.integers(-1, 9)},
                                                optional={"etag": JSON, "mtime": JSON, "x": JSON}) | JSON, max_size=4)


@settings(**SETTINGS)
@given(data=st.one_of(JSON, st.fixed_dictionaries({"version": st.sampled_from([1, 2, "1"]), "files": ENTRIES | JSON})))
def test_read_index_returns_only_valid_entries_for_any_json(data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / INDEX_NAME).write_text(json.dumps(data))
        index = remote_paths.read_index(root, root)
    for rel, entry in index.items():
        assert remote_paths.key_problem(rel) is None
        assert type(entry["size"]) is int and entry["size"] >= 0 and type(entry["local_mtime_ns"]) is int
        assert set(entry) - {"size", "local_mtime_ns"} in ({"etag"}, {"mtime"})


# ----------------------------------------------------------------------------- upload: the mirror image
def bucket_keys(s3_server, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.parametrize(("plant", "found"), [
    (lambda src, out: (src / "w.bin").symlink_to(out / "sentinel.txt"),
     r"found a link to .*/outside/sentinel\.txt, outside the folder being uploaded\. Copy what it points to"),
    (lambda src, out: (src / "sub").symlink_to(out, target_is_directory=True),
     r"found a link to a folder \(links to folders are not followed\)"),
    (lambda src, out: os.mkfifo(src / "pipe"), r"found not a regular file \(a FIFO"),
    (lambda src, out: (src / "dangling").symlink_to(out / "nope"), r"found a link to .*, outside the folder"),
    (lambda src, out: (src / "a\x1bb").write_bytes(b"1"), r"found a name that fetch would refuse: the control"),
])
def test_upload_never_follows_a_link_out_of_the_folder(plant, found, s3_server, s3_bucket, tmp_path, outside):
    src = tmp_path / "src"
    write_model(src)
    plant(src, outside)
    with pytest.raises(DataError, match=rf"^upload: {re.escape(str(src))}/.*: expected a regular file inside the "
                                        rf"folder being uploaded, {found}"):
        upload(src, f"s3://{s3_bucket}/up")
    assert bucket_keys(s3_server, s3_bucket) == []  # refused before the first upload


def test_upload_follows_a_link_inside_the_folder(s3_server, s3_bucket, tmp_path):
    src = tmp_path / "src"
    write_model(src)
    (src / "adapter" / "config.json").symlink_to(src / "config.json")
    upload(src, f"s3://{s3_bucket}/up")
    assert "up/adapter/config.json" in bucket_keys(s3_server, s3_bucket)
    got = fetch(f"s3://{s3_bucket}/up", cache_dir=tmp_path / "cache", progress=False)
    assert (got / "adapter" / "config.json").read_bytes() == (src / "config.json").read_bytes()


# ----------------------------------------------------------------------------- through the CLI
def test_tforge_train_reports_a_hostile_key_as_an_error_not_a_traceback(s3_server, s3_bucket, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from template_forge.cli import main

    from trainer_kit import make_run

    put(s3_server, s3_bucket, {"m/config.json": b"{}", "m/config.json/x": b"1"})
    monkeypatch.setenv("TFORGE_CACHE_DIR", str(tmp_path / "cache"))
    config = make_run(tmp_path, model=tmp_path / "unused", initial_base_model_ckpt_path=f"s3://{s3_bucket}/m")
    result = CliRunner().invoke(main, ["train", str(config), "--quiet"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # not a crash
    assert (f"Error: initial_base_model_ckpt_path: s3://{s3_bucket}/m: key `config.json` is an object and also the "
            f"folder of `config.json/x`") in result.output
    assert "Traceback" not in result.output and not (tmp_path / "cache").exists()


class _Listing:
    """A store whose listing is whatever the test says (a hostile or broken endpoint)."""

    def __init__(self, found: dict):
        self.found = found

    def find(self, path, detail=True):
        return self.found


@pytest.mark.parametrize("size", ["12x", -1, "-3", 1.5, True, [3], "9" * 30 + "a"])
def test_a_listing_without_a_sane_size_is_refused(size):
    url = remote._S3Url.parse("s3://b/m", "weights")
    found = {"b/m/config.json": {"type": "file", "size": size}}
    with pytest.raises(DataError, match=r"weights: s3://b/m: the store listed `b/m/config\.json` with size .*not a "
                                        r"byte count"):
        remote._list(_Listing(found), url, "weights")


def test_a_listing_with_sizes_as_digit_strings_is_read():
    url = remote._S3Url.parse("s3://b/m", "weights")
    _, objects = remote._list(_Listing({"b/m/a.json": {"type": "file", "size": "12"}}), url, "weights")
    assert objects == {"a.json": {"type": "file", "size": 12}}


def test_the_cache_dir_setting_expands_a_home_folder(monkeypatch, tmp_path):
    from tforge_trainer.weights import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TFORGE_CACHE_DIR", "~/tf-cache")
    assert cache_dir() == tmp_path / "tf-cache"  # not a folder literally named "~" in the working directory
    monkeypatch.setenv("TFORGE_CACHE_DIR", "")
    assert cache_dir() == tmp_path / ".cache" / "tforge"
