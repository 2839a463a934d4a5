"""Helpers for the tests that run `tforge` as real processes: killed with SIGKILL, or two at
once into one folder. The data is big enough that a run takes a second or two."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, write_conversations

CONVERSATIONS = 600


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "trainer"),
                                                         os.environ.get("PYTHONPATH", "")])}


def start(*args) -> subprocess.Popen:
    """``tforge ARGS`` as its own process group (so that a killed run's workers can be reaped)."""
    return subprocess.Popen([sys.executable, "-m", "template_forge.cli", *map(str, args)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run(*args) -> subprocess.CompletedProcess:
    proc = start(*args)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a run's process group (workers of a killed parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def contents(folder: Path) -> dict[str, bytes]:
    """Every file of an output folder; a tokenized manifest without its ``created`` time."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    manifest = json.loads(files["manifest.json"])
    manifest.pop("created", None)
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def beside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def make_inputs(tmp_path_factory, real_tokenizer):
    """``(conversations, tokenizer, tokenized folder)``; a module makes it its fixture ``inputs``
    with ``pytest.fixture(scope="module", name="inputs")(make_inputs)``."""
    root = tmp_path_factory.mktemp("inputs")
    words = ["alpha", "beta", "gamma", "delta", "é", "\n", "lorem", "ipsum"]
    data = write_conversations(root / "d.jsonl", CONVERSATIONS, words=words, user_words=60, assistant_words=120)
    tok = real_tokenizer("llama3")
    result = run("tokenize", data, "-f", "llama3", "-t", tok, "-o", root / "tok", "--workers", "1", "-q")
    assert result.returncode == 0, result.stderr
    return data, tok, root / "tok"


def command_args(command: str, inputs, out: Path, *, workers: int = 1) -> list:
    data, tok, tokenized = inputs
    return {
        "tokenize": ["tokenize", data, "-f", "llama3", "-t", tok, "-o", out, "--workers", workers, "-q"],
        "prepare": ["prepare", data, "-f", "llama3", "-t", tok, "-n", 512, "-o", out, "--workers", workers, "-q"],
        "pack": ["pack", tokenized, "-n", 512, "-o", out, "-q"],
    }[command]
