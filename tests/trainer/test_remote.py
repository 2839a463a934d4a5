"""tforge_trainer.remote against a real S3 endpoint (moto's server on 127.0.0.1, see s3server.py)."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from template_forge.errors import DataError
from tforge_trainer import remote
from tforge_trainer.remote import INDEX_NAME, fetch, is_remote, upload


def write_model(folder: Path) -> dict[str, bytes]:
    """A save_pretrained-like folder with a nested adapter folder and a 1 MiB binary."""
    files = {
        "config.json": b'{"model_type": "llama", "hidden_size": 64}',
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": random.Random(0).randbytes(1 << 20),
        "adapter/adapter_config.json": b'{"r": 8}',
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but fetch's index, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != INDEX_NAME}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def model(s3_bucket, tmp_path):
    """``(url, files)``: the model uploaded to ``s3://<fresh bucket>/models/tiny``."""
    files = write_model(tmp_path / "src")
    url = f"s3://{s3_bucket}/models/tiny"
    upload(tmp_path / "src", url)
    return url, files


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """The remote paths actually downloaded, in order (the real download still runs)."""
    seen: list[str] = []
    real = remote._download

    def counting(fs, remote_path, local, callback):
        seen.append(remote_path.split("/models/tiny/", 1)[-1])
        real(fs, remote_path, local, callback)

    monkeypatch.setattr(remote, "_download", counting)
    return seen


# ----------------------------------------------------------------------------- fetching a prefix
def test_fetch_mirrors_the_prefix_byte_for_byte(model, s3_server, tmp_path, capsys):
    url, files = model
    bucket = url.split("/")[2]
    # zero-byte "folder" objects some tools create are not files
    s3_server.client().put_object(Bucket=bucket, Key="models/tiny/", Body=b"")
    got = fetch(url, cache_dir=tmp_path / "cache")
    assert got == tmp_path / "cache" / "s3" / bucket / "models" / "tiny"
    assert tree(got) == files
    assert re.search(rf"fetching {re.escape(url)} \(4 files, 1\.\d MB\) → {re.escape(str(got))}",
                     capsys.readouterr().err)


def test_refetch_of_an_unchanged_prefix_downloads_nothing(model, tmp_path, downloads, capsys):
    url, files = model
    first = fetch(url, cache_dir=tmp_path / "cache", progress=False)
    before = mtimes(first)
    capsys.readouterr()
    assert fetch(url, cache_dir=tmp_path / "cache", progress=False) == first
    assert sorted(downloads) == sorted(files)  # the first fetch only
    assert mtimes(first) == before and tree(first) == files
    assert "fetching" not in capsys.readouterr().err


def test_refetch_downloads_changed_and_new_objects_and_drops_deleted_ones(model, s3_server, tmp_path, downloads):
    url, files = model
    bucket = url.split("/")[2]
    local = fetch(url, cache_dir=tmp_path / "cache", progress=False)
    downloads.clear()
    client = s3_server.client()
    changed = files["config.json"].replace(b"64", b"32")  # same size: the ETag tells
    client.put_object(Bucket=bucket, Key="models/tiny/config.json", Body=changed)
    client.put_object(Bucket=bucket, Key="models/tiny/generation_config.json", Body=b"{}")
    client.delete_object(Bucket=bucket, Key="models/tiny/adapter/adapter_config.json")

    assert fetch(url, cache_dir=tmp_path / "cache", progress=False) == local
    assert downloads == ["config.json", "generation_config.json"]
    assert tree(local) == {"config.json": changed, "generation_config.json": b"{}",
                           "model.safetensors": files["model.safetensors"], "tokenizer.json": files["tokenizer.json"]}
    assert not (local / "adapter").exists()  # the folder it emptied goes too
    assert sorted(json.loads((local / INDEX_NAME).read_text())["files"]) == sorted(tree(local))


def test_refetch_restores_a_cached_file_removed_or_edited_locally(model, tmp_path, downloads):
    url, files = model
    local = fetch(url, cache_dir=tmp_path / "cache", progress=False)
    downloads.clear()
    (local / "tokenizer.json").unlink()
    (local / "config.json").write_bytes(b"edited by hand")
    fetch(url, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(downloads) == ["config.json", "tokenizer.json"]
    assert tree(local) == files


def test_files_it_did_not_fetch_are_left_alone(model, tmp_path):
    url, files = model
    local = tmp_path / "cache" / "s3" / url.split("/")[2] / "models" / "tiny"
    (local / "adapter").mkdir(parents=True)
    (local / "adapter" / "notes.txt").write_text("mine")
    fetch(url, cache_dir=tmp_path / "cache", progress=False)
    assert tree(local) == {**files, "adapter/notes.txt": b"mine"}


# ----------------------------------------------------------------------------- one object
def test_single_object_url_returns_the_file(model, tmp_path, downloads):
    url, files = model
    got = fetch(f"{url}/model.safetensors", cache_dir=tmp_path / "cache", progress=False)
    assert got == tmp_path / "cache" / "s3" / url.split("/")[2] / "models" / "tiny" / "model.safetensors"
    assert got.read_bytes() == files["model.safetensors"]
    assert fetch(f"{url}/model.safetensors", cache_dir=tmp_path / "cache", progress=False) == got
    assert downloads == ["model.safetensors"]
    # the prefix shares the folder and its index: only the other files come down
    fetch(url, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(downloads[1:]) == ["adapter/adapter_config.json", "config.json", "tokenizer.json"]


def test_upload_to_a_missing_bucket_says_so(s3_server, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"w")
    with pytest.raises(DataError, match=r"^upload: s3://no-such-bucket-y/m: bucket `no-such-bucket-y` does not exist"):
        upload(tmp_path, "s3://no-such-bucket-y/m")


def test_upload_of_one_file(s3_bucket, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\x00\x01")
    upload(tmp_path / "w.bin", f"s3://{s3_bucket}/one/w.bin")
    assert fetch(f"s3://{s3_bucket}/one/w.bin", cache_dir=tmp_path / "c", progress=False).read_bytes() == b"\x00\x01"


# ----------------------------------------------------------------------------- interruptions
class Interrupted(BaseException):
    """Like KeyboardInterrupt: not an Exception, so only cleanup that catches everything sees it."""


def interrupt_on_call(monkeypatch, n: int) -> None:
    """Make the n-th download write half the object to its temporary file and then fail."""
    real, calls = remote._download, []

    def flaky(fs, remote_path, local, callback):
        calls.append(remote_path)
        if len(calls) == n:
            local.write_bytes(fs.cat_file(remote_path)[: fs.size(remote_path) // 2])
            raise Interrupted(remote_path)
        real(fs, remote_path, local, callback)

    monkeypatch.setattr(remote, "_download", flaky)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tforge-tmp")]


def test_an_interrupted_fetch_leaves_no_partial_file_and_resumes(model, tmp_path, monkeypatch):
    url, files = model
    local = tmp_path / "cache" / "s3" / url.split("/")[2] / "models" / "tiny"
    interrupt_on_call(monkeypatch, 2)  # files go in sorted order: the second is model.safetensors
    with pytest.raises(Interrupted):
        fetch(url, cache_dir=tmp_path / "cache", progress=False)
    assert tree(local) == {"adapter/adapter_config.json": files["adapter/adapter_config.json"]}
    assert leftovers(local) == []
    assert list(json.loads((local / INDEX_NAME).read_text())["files"]) == ["adapter/adapter_config.json"]

    monkeypatch.undo()
    resumed: list[str] = []
    real = remote._download
    monkeypatch.setattr(remote, "_download", lambda fs, r, lo, cb: (resumed.append(r), real(fs, r, lo, cb)))
    assert tree(fetch(url, cache_dir=tmp_path / "cache", progress=False)) == files
    assert len(resumed) == 3  # the finished file is not fetched again


def test_an_interrupted_update_keeps_the_previous_file_whole(model, s3_server, tmp_path, monkeypatch):
    url, files = model
    local = fetch(url, cache_dir=tmp_path / "cache", progress=False)
    new_weights = random.Random(1).randbytes(1 << 20)
    s3_server.client().put_object(Bucket=url.split("/")[2], Key="models/tiny/model.safetensors", Body=new_weights)
    interrupt_on_call(monkeypatch, 1)
    with pytest.raises(Interrupted):
        fetch(url, cache_dir=tmp_path / "cache", progress=False)
    assert tree(local) == files and leftovers(local) == []
    monkeypatch.undo()
    assert tree(fetch(url, cache_dir=tmp_path / "cache", progress=False)) == {**files, "model.safetensors": new_weights}


@pytest.mark.parametrize(("change", "message"), [
    ("delete", r"model\.safetensors: the object disappeared from http://127\.0\.0\.1:\d+ while fetching\. Run again"),
    ("shrink", r"model\.safetensors: got 3 bytes, but the listing said 1048576; the object changed while fetching"),
])
def test_an_object_changing_during_the_fetch_fails_cleanly(model, s3_server, tmp_path, monkeypatch, change, message):
    url, files = model
    bucket, key = url.split("/")[2], "models/tiny/model.safetensors"
    real = remote._download

    def racing(fs, remote_path, local, callback):
        if remote_path.endswith("model.safetensors"):  # someone rewrites the model under our feet
            if change == "delete":
                s3_server.client().delete_object(Bucket=bucket, Key=key)
            else:
                s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"new")
        real(fs, remote_path, local, callback)

    monkeypatch.setattr(remote, "_download", racing)
    with pytest.raises(DataError, match=message):
        fetch(url, cache_dir=tmp_path, progress=False)
    local = tmp_path / "s3" / bucket / "models" / "tiny"
    assert not (local / "model.safetensors").exists() and leftovers(local) == []


# ----------------------------------------------------------------------------- errors
def test_missing_bucket_says_which_and_how_to_check(s3_server, tmp_path):
    with pytest.raises(DataError, match=r"weights: s3://no-such-bucket-x/m: bucket `no-such-bucket-x` does not exist "
                                        rf"at {re.escape(s3_server.endpoint_url)}\. Check the name \(aws s3 ls\)"):
        fetch("s3://no-such-bucket-x/m", cache_dir=tmp_path)


def test_empty_prefix_says_where_and_how_to_check(model, tmp_path):
    bucket = model[0].split("/")[2]
    with pytest.raises(DataError) as err:
        fetch(f"s3://{bucket}/models/tin", cache_dir=tmp_path, what="adapter")  # a prefix of a name is not a folder
    assert str(err.value) == (f"adapter: s3://{bucket}/models/tin: no objects under this prefix. "
                              f"Check the bucket and prefix (aws s3 ls s3://{bucket}/models/tin/).")
    assert not (tmp_path / "s3").exists()


def test_no_credentials_names_the_variables_to_set(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DataError, match=r"s3://.*/m: no usable AWS credentials .*AWS_ACCESS_KEY_ID.*AWS_PROFILE"):
        fetch(f"s3://{s3_bucket}/m", cache_dir=tmp_path)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_unreachable_endpoint_names_it(s3_bucket, tmp_path, monkeypatch):
    dead = closed_port_url()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    monkeypatch.setattr("s3fs.S3FileSystem.retries", 1)  # s3fs's own retries, with backoff
    with pytest.raises(DataError, match=rf"cannot reach {re.escape(dead)} .*AWS_ENDPOINT_URL_S3"):
        fetch(f"s3://{s3_bucket}/m", cache_dir=tmp_path,
              storage_options={"config_kwargs": {"retries": {"max_attempts": 1}}})


def test_storage_options_endpoint_wins_over_the_environment(model, s3_server, tmp_path, monkeypatch):
    url, files = model
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed_port_url())
    got = fetch(url, cache_dir=tmp_path, storage_options={"client_kwargs": {"endpoint_url": s3_server.endpoint_url}})
    assert tree(got) == files


def test_keys_that_would_escape_the_cache_are_refused(s3_bucket, s3_server, tmp_path):
    s3_server.client().put_object(Bucket=s3_bucket, Key="m/../../evil", Body=b"x")
    with pytest.raises(DataError, match=r"key `\.\./\.\./evil` cannot be stored as a local file"):
        fetch(f"s3://{s3_bucket}/m", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil").exists()


def test_other_schemes_are_refused_with_a_way_out(tmp_path):
    with pytest.raises(DataError, match=r"weights: gs://b/p: only local paths and s3:// URLs are supported"):
        fetch("gs://b/p", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- local paths
def test_local_paths_are_returned_as_they_are(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"w")
    assert fetch(tmp_path, cache_dir=tmp_path / "cache") == tmp_path
    assert fetch(str(tmp_path / "w.safetensors"), cache_dir=tmp_path / "cache") == tmp_path / "w.safetensors"
    assert fetch(tmp_path.as_uri(), cache_dir=tmp_path / "cache") == tmp_path
    assert not (tmp_path / "cache").exists()


def test_missing_local_path_says_what_and_how_to_fix(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=rf"^adapter: {re.escape(str(missing))}: no such file or folder\. "
                                        r"Check the path, or give an s3://bucket/prefix URL"):
        fetch(missing, cache_dir=tmp_path, what="adapter")


@pytest.mark.parametrize(("path", "expected"), [
    ("s3://bucket/prefix", True), ("S3://bucket/prefix", True), ("s3a://b/p", True), ("gs://b/p", True),
    ("file:///tmp/model", False), ("/tmp/model", False), ("models/tiny", False), (Path("s3:/x"), False),
])
def test_is_remote(path, expected):
    assert is_remote(path) is expected


def test_importing_remote_loads_no_s3_or_torch_modules():
    code = ("import sys, tforge_trainer.remote; "
            "print(sorted(m for m in ('torch', 'fsspec', 's3fs', 'botocore', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
