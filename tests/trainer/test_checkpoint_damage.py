"""--resume with damaged checkpoints: every file of a checkpoint deleted, emptied, truncated,
a byte flipped or replaced by a folder; the checkpoint folder replaced by a file; a state.json
that lies (with its manifest rewritten to match); planted pickles. A damaged latest checkpoint
is reported and the previous whole one resumed, with the losses of an undamaged resume from
it; when none is whole, a clear refusal; never a traceback, never planted code run.

One run with checkpoints at steps 2, 4 and 6 is built once (module fixture) and copied per
case; each case resumes to step 5 only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from template_forge.data.provenance import sha256_file  # noqa: E402
from template_forge.errors import ConfigError, DataError  # noqa: E402
from tforge_trainer.checkpoint_verify import write_manifest  # noqa: E402
from tforge_trainer.config import load_config  # noqa: E402
from tforge_trainer.recipe import train  # noqa: E402

from trainer_kit import Planted, make_model, make_run, read_metrics  # noqa: E402

FILES = ["adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
         "rng-rank0.safetensors", "state.json", "manifest.json"]


def _delete(p: Path) -> None:
    p.unlink()


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _folder(p: Path) -> None:
    p.unlink()
    p.mkdir()
    (p / "x").write_text("x")


DAMAGES = {"deleted": _delete, "emptied": _empty, "truncated": _truncate, "byte-flipped": _flip,
           "folder": _folder}
EXPECTED = {"deleted": "is missing|has no manifest", "emptied": "bytes|not valid JSON",
            "truncated": "bytes|not valid JSON", "byte-flipped": "sha256|not valid JSON|manifest of step|not a file",
            "folder": "not a file"}


def run(config: Path, *overrides: str, **kwargs) -> tuple[Path, list[str]]:
    said: list[str] = []
    cfg, _ = load_config(config, overrides)
    return train(cfg, progress=False, log=said.append, **kwargs), said


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(config, a run stopped at step 6 with checkpoints 2, 4, 6, the uninterrupted run's step records)."""
    root = tmp_path_factory.mktemp("damage")
    model = make_model(root / "model")
    common = dict(model=model, valid_path=None, max_num_checkpoints=3, num_epochs=3)
    full, _ = run(make_run(root / "full", **common))
    config = make_run(root / "split", **common)
    out, _ = run(config, stop_at_step=6)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-00000{i}" for i in (2, 4, 6)]
    return config, out, read_metrics(full)[0]


def copy_run(made, tmp_path: Path) -> tuple[Path, Path]:
    config, out, _ = made
    case = tmp_path / "out"
    shutil.copytree(out, case)
    return config, case


def resume(config: Path, out: Path) -> list[str]:
    _, said = run(config, f"output_dir={out}", resume=True, stop_at_step=5)
    return said


def assert_resumed_from_4(made, out: Path, said: list[str], problem: str) -> None:
    """Resumed from step 4 (step 6 reported and set aside), with the uninterrupted run's step 5."""
    warnings = [m for m in said if m.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and "step-000006 is damaged" in warnings[0], said
    assert __import__("re").search(problem, warnings[0]), warnings[0]
    assert any("resumed from" in m and "step-000004" in m for m in said), said
    steps = read_metrics(out)[0]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    expected = made[2][4]
    assert steps[-1]["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=1e-9)
    assert steps[-1]["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-5)
    assert (out / "checkpoints" / ".step-000006.damaged").exists()
    assert not (out / "checkpoints" / "step-000006").exists()


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("file", FILES)
def test_a_damaged_file_of_the_latest_checkpoint_resumes_from_the_previous_one(made, tmp_path, file, damage):
    config, out = copy_run(made, tmp_path)
    DAMAGES[damage](out / "checkpoints" / "step-000006" / file)
    said = resume(config, out)
    assert_resumed_from_4(made, out, said, EXPECTED[damage])


def test_the_checkpoint_folder_replaced_by_a_file(made, tmp_path):
    config, out = copy_run(made, tmp_path)
    step6 = out / "checkpoints" / "step-000006"
    shutil.rmtree(step6)
    step6.write_text("not a checkpoint")
    assert_resumed_from_4(made, out, resume(config, out), "is not a folder")


def rewrite_state(ckpt: Path, **changes) -> None:
    """Change ``state.json`` and rewrite the manifest to match: only the state's own checks can tell."""
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps({**state, **changes}))
    (ckpt / "manifest.json").unlink()
    write_manifest(ckpt, 6)


@pytest.mark.parametrize("changes, problem", [
    ({"step": 4}, "state.json says step 4 of .*the folder is step 6"),
    ({"step": 10000, "total_steps": 12}, "state.json says step 10000 of 12"),
    ({"world_size": "2"}, "must be integers"),
])
def test_a_state_json_that_lies_is_damage_even_with_a_matching_manifest(made, tmp_path, changes, problem):
    config, out = copy_run(made, tmp_path)
    rewrite_state(out / "checkpoints" / "step-000006", **changes)
    assert_resumed_from_4(made, out, resume(config, out), problem)


def test_a_checkpoint_of_another_world_size_is_refused(made, tmp_path):
    config, out = copy_run(made, tmp_path)
    ckpt = out / "checkpoints" / "step-000006"
    shutil.copy(ckpt / "rng-rank0.safetensors", ckpt / "rng-rank1.safetensors")
    rewrite_state(ckpt, world_size=2)
    with pytest.raises(ConfigError, match=r"made by 2 process\(es\), this one has 1.*--nproc_per_node 2"):
        resume(config, out)


def test_every_checkpoint_damaged_is_a_clear_refusal(made, tmp_path):
    config, out = copy_run(made, tmp_path)
    for step in (2, 4, 6):
        (out / "checkpoints" / f"step-00000{step}" / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"(?s)step-000006.*has no manifest.json.*no whole checkpoint is left.*"
                                          r"3 found.*without --resume"):
        resume(config, out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-00000{i}" for i in (2, 4, 6)]


@pytest.mark.parametrize("file", ["rng-rank0.safetensors", "optimizer.pt", "scheduler.pt"])
@pytest.mark.parametrize("manifest", ["stale", "rewritten"])
def test_a_planted_pickle_is_never_run(made, tmp_path, file, manifest):
    """A pickle whose unpickling writes a file, in place of a checkpoint file. With the
    manifest left as it was, verification skips the checkpoint; with a manifest rewritten to
    match, the load refuses it (tensors only) naming the file. The code never runs."""
    config, out = copy_run(made, tmp_path)
    sentinel = tmp_path / "planted-code-ran"
    ckpt = out / "checkpoints" / "step-000006"
    torch.save({"state": Planted(sentinel)}, ckpt / file)
    if manifest == "stale":
        assert_resumed_from_4(made, out, resume(config, out), "sha256|bytes")
    else:
        (ckpt / "manifest.json").unlink()
        write_manifest(ckpt, 6)
        assert json.loads((ckpt / "manifest.json").read_text())["files"][file]["sha256"] == sha256_file(ckpt / file)
        with pytest.raises(DataError, match=rf"{file}.*(cannot load|not a tforge RNG state file)"):
            resume(config, out)
    assert not sentinel.exists()


def test_an_undamaged_resume_continues_from_the_latest(made, tmp_path):
    config, out = copy_run(made, tmp_path)
    _, said = run(config, f"output_dir={out}", resume=True, stop_at_step=7)
    assert not any(m.startswith("warning") for m in said)
    steps = read_metrics(out)[0]
    assert [r["step"] for r in steps] == list(range(1, 8))
    assert steps[-1]["loss"] == pytest.approx(made[2][6]["loss"], rel=1e-6, abs=1e-9)


def test_no_case_ends_in_a_traceback_through_the_cli(made, tmp_path):
    from click.testing import CliRunner

    from template_forge.cli import main

    config, out = copy_run(made, tmp_path)
    for step in (2, 4, 6):
        _empty(out / "checkpoints" / f"step-00000{step}" / "state.json")
    result = CliRunner().invoke(main, ["train", str(config), f"output_dir={out}", "--resume", "--quiet"])
    assert result.exit_code == 1 and result.output.startswith("Error:"), result.output
    assert isinstance(result.exception, SystemExit)  # the CLI's exit 1, not an escaped exception
    assert "Traceback" not in result.output and os.fspath(out) in result.output
