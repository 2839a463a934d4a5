"""The output lock (one writer per output folder, released by the kernel when its holder
dies) and the clearing of what dead runs left beside an output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from template_forge.errors import DataError
from template_forge.io import clear_stale, replace_dir
from template_forge.locks import lock_path, output_lock

from conftest import ROOT


def _python(script: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True,
                            env=env)


def test_a_second_writer_is_refused_with_who_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as lock:
        assert lock == tmp_path / ".out.lock" and lock.read_text().startswith(f"pid {os.getpid()}: ")
        with pytest.raises(DataError, match=rf"out: another tforge run is writing this output folder "
                                            rf"\(pid {os.getpid()}: .*\)\. Wait for it to finish, or pass --wait"):
            with output_lock(out):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the lock file goes with the lock
    with output_lock(out):  # and the lock is free again
        pass


def test_the_lock_is_let_go_when_the_body_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with output_lock(tmp_path / "out"):
            raise KeyboardInterrupt
    with output_lock(tmp_path / "out"):
        pass


def test_a_waiting_writer_starts_when_the_holder_lets_go(tmp_path):
    """The holder removes the lock file as it lets go; the waiter, which locked the removed
    file, must notice and lock the new one (else a third run could hold it at the same time)."""
    out, told, got = tmp_path / "out", threading.Event(), []

    def second():
        with output_lock(out, wait=True, on_wait=lambda message: (got.append(message), told.set())):
            got.append(lock_path(out).read_text())
            with pytest.raises(DataError, match="another tforge run"):
                with output_lock(out):  # a third run while the second holds it
                    pass

    with output_lock(out):
        thread = threading.Thread(target=second)
        thread.start()
        assert told.wait(60)
    thread.join(60)
    assert not thread.is_alive()
    assert "is being written by another tforge run (pid" in got[0] and "waiting for it to finish" in got[0]
    assert got[1].startswith(f"pid {os.getpid()}")
    assert not lock_path(out).exists()


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    holder = _python(f"""
        import time
        from template_forge.locks import output_lock
        with output_lock({str(tmp_path / 'out')!r}):
            print("locked", flush=True)
            time.sleep(600)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match=rf"pid {holder.pid}: "):
            with output_lock(tmp_path / "out"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(tmp_path / "out").exists()  # left by the dead run: harmless, the kernel let go of the lock
    with output_lock(tmp_path / "out"):
        pass
    assert not lock_path(tmp_path / "out").exists()


def test_a_forked_child_that_outlives_its_parent_does_not_keep_the_lock(tmp_path):
    """Tokenize's workers are forked while the lock is held, and flock belongs to the open file."""
    holder = _python(f"""
        import os, signal, time
        from template_forge.locks import output_lock
        with output_lock({str(tmp_path / 'out')!r}):
            child = os.fork()
            if child == 0:
                time.sleep(600)
                os._exit(0)
            print(child, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = int(holder.stdout.readline())
    holder.wait()
    try:
        os.kill(child, 0)  # still alive
        with output_lock(tmp_path / "out"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_lock_file_that_is_a_symlink_or_not_a_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.lock").symlink_to(victim)
    with pytest.raises(DataError, match=r"\.out\.lock: cannot open the output's lock file \(it is a symlink\)"):
        with output_lock(tmp_path / "out"):
            pass
    assert victim.read_text() == "precious"
    (tmp_path / ".other.lock").mkdir()
    with pytest.raises(DataError, match=r"\.other\.lock: cannot open the output's lock file"):
        with output_lock(tmp_path / "other"):
            pass
    os.mkfifo(tmp_path / ".fifo.lock")
    with pytest.raises(DataError, match=r"\.fifo\.lock: the output's lock file is not a regular file"):
        with output_lock(tmp_path / "fifo"):
            pass


@pytest.mark.parametrize("target", [".", "..", "/"])
def test_an_output_must_name_a_folder(tmp_path, target):
    with pytest.raises(DataError, match="an output must name a new folder"):
        with output_lock(target):
            pass


def test_only_the_leftovers_of_this_output_are_cleared(tmp_path):
    stale = [".out.k3j_9zzq.tmp", ".out.abcdefgh.tmp", ".out.trash-77"]
    keep = [".outx.abcdefgh.tmp", ".out.abcdefg.tmp", ".out.ABCDEFGH.tmp", "out.abcdefgh.tmp", ".out.partial",
            ".out.tokenized", ".out.lock-1", ".other.abcdefgh.tmp", ".out.old-12x"]
    for name in stale + keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    (tmp_path / ".out.zzzzzzzz.tmp").write_text("write_atomic's temporary file of a file named out")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "f").write_text("x")
    (tmp_path / ".out.linkedto.tmp").symlink_to(elsewhere)
    (tmp_path / "out").mkdir()
    (tmp_path / ".out.old-123").mkdir()  # a replaced folder a killed run had not removed yet
    assert sorted(clear_stale(tmp_path / "out")) == sorted(stale + [".out.old-123"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(keep + [".out.zzzzzzzz.tmp", ".out.linkedto.tmp", "elsewhere", "out"])
    assert (elsewhere / "f").exists()


def test_a_folder_moved_aside_by_a_killed_replace_is_put_back(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("the previous output")
    new = tmp_path / "new"
    new.mkdir()
    real = os.replace

    def killed_after_the_first_rename(src, dst):
        real(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, tmp_path / "out")
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / "out").exists() and (tmp_path / f".out.old-{os.getpid()}").is_dir()
    clear_stale(tmp_path / "out")
    assert (tmp_path / "out" / "old.txt").read_text() == "the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]
