"""`kill -9` of `tforge tokenize | prepare | pack` at random moments, then a rerun: the rerun's
output equals an uninterrupted run's byte for byte, and nothing is left beside it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
from runs_kit import beside, command_args, contents, make_inputs, no_traceback, reap, run, start

inputs = pytest.fixture(scope="module", name="inputs")(make_inputs)


TRIALS = int(os.environ.get("TFORGE_KILL_TRIALS", 2))


@pytest.mark.parametrize("command", ["tokenize", "prepare", "pack"])
def test_a_rerun_after_kill_9_gives_the_uninterrupted_output_and_leaves_nothing(command, inputs, tmp_path):
    reference = tmp_path / "reference" / "out"
    began = time.monotonic()
    assert run(*command_args(command, inputs, reference)).returncode == 0
    duration = time.monotonic() - began  # only to spread the kill moments over a run
    want = contents(reference)
    rng = random.Random(None if os.environ.get("TFORGE_RANDOM") else f"kill-{command}")
    for trial in range(TRIALS):
        out = tmp_path / f"trial-{trial}" / "out"
        # trial 0 forks workers: one may outlive its killed parent while the rerun runs
        proc = start(*command_args(command, inputs, out, workers=2 if trial == 0 else 1))
        try:
            proc.wait(timeout=rng.uniform(0.0, duration))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        again = run(*command_args(command, inputs, out), *(["--overwrite"] if command == "tokenize" else []))
        reap(proc)
        no_traceback(again)
        assert again.returncode == 0, f"trial {trial} (killed with {proc.returncode}): {again.stderr}"
        assert beside(out) == ["out"], f"trial {trial} (killed with {proc.returncode})"
        assert contents(out) == want, f"trial {trial} (killed with {proc.returncode})"
