"""Two `tforge pack` (or `prepare`) runs into one output folder at once: the folder afterwards
is complete and verifies, and each run ends with exit 0 or a clear message, never a traceback."""

from __future__ import annotations

import pytest
from runs_kit import beside, command_args, contents, make_inputs, no_traceback, run, start

from template_forge.data.packed import PackedDataset
from template_forge.locks import output_lock

inputs = pytest.fixture(scope="module", name="inputs")(make_inputs)


BUSY = "another tforge run is writing this output folder"


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("references")
    for command in ("pack", "prepare"):
        assert run(*command_args(command, inputs, root / command)).returncode == 0
    return {command: contents(root / command) for command in ("pack", "prepare")}


def _both(command: str, inputs, out, *extra) -> list:
    procs = [start(*command_args(command, inputs, out), *extra) for _ in range(2)]
    return [(proc.returncode, err) for proc, (_, err) in ((p, p.communicate(timeout=600)) for p in procs)]


@pytest.mark.parametrize("command", ["pack", "prepare"])
def test_the_second_run_waits_with_wait_and_finds_the_folder_up_to_date(command, inputs, references, tmp_path):
    out = tmp_path / "run" / "out"
    results = _both(command, inputs, out, "--wait")
    for code, err in results:
        assert "Traceback" not in err and code == 0, err
    assert sum("is up to date" in err for _, err in results) == 1  # one wrote it, the other reused it
    PackedDataset(out).verify()
    assert contents(out) == references[command]
    assert beside(out) == ["out"]


@pytest.mark.parametrize("command", ["pack", "prepare"])
def test_without_wait_the_second_run_stops_with_a_clear_message(command, inputs, references, tmp_path):
    out = tmp_path / "run" / "out"
    results = _both(command, inputs, out)
    for code, err in results:
        assert "Traceback" not in err, err
        assert code == 0 or (code == 1 and f"Error: {out}: {BUSY} (pid " in err and "--wait" in err), err
    assert any(code == 0 for code, _ in results)
    PackedDataset(out).verify()
    assert contents(out) == references[command]
    assert beside(out) == ["out"]


def test_a_run_into_a_locked_folder_stops_or_waits_for_the_holder(inputs, references, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        refused = run(*command_args("pack", inputs, out))
        no_traceback(refused)
        assert refused.returncode == 1 and BUSY in refused.stderr and "pass --wait" in refused.stderr
        assert beside(out) == [".out.lock"]
        waiting = start(*command_args("pack", inputs, out), "--wait")
        told = waiting.stderr.readline()
        assert "is being written by another tforge run (pid" in told and "waiting for it to finish" in told
    _, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, err
    assert contents(out) == references["pack"] and beside(out) == ["out"]
