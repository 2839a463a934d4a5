"""The LoRA trainer end to end on a tiny random Llama, on CPU: outputs, the served chat
template, gradient accumulation normalised by trained tokens, checkpoints and exact resume,
continuing an adapter, merging, plotting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from template_forge.cli import main  # noqa: E402
from template_forge.errors import ConfigError  # noqa: E402
from tforge_trainer.config import load_config  # noqa: E402
from tforge_trainer.recipe import train  # noqa: E402

from trainer_kit import conversations, make_model, make_run, read_metrics  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("base") / "tiny-llama")


def run(config: Path, *overrides: str, **kwargs) -> Path:
    cfg, _ = load_config(config, overrides)
    return train(cfg, progress=False, log=lambda msg: None, **kwargs)


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def test_a_run_writes_adapter_tokenizer_metrics_and_bounded_checkpoints(tmp_path, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from template_forge import load_spec, render

    out = run(make_run(tmp_path, model=model_dir))
    steps, evals = read_metrics(out)
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 6
    assert [r["step"] for r in evals] == [s for s in range(1, len(steps) + 1) if s % 2 == 0 or s == len(steps)]
    assert all(r["trained_tokens"] > 0 and r["tokens"] >= r["trained_tokens"] for r in steps)
    assert steps[-1]["total_trained_tokens"] == sum(r["trained_tokens"] for r in steps)
    assert steps[0]["lr"] == pytest.approx(5e-3) and steps[-1]["lr"] < steps[1]["lr"]  # warmup 1, cosine
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learns
    # at most max_num_checkpoints (2) kept, each complete
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == [f"step-{len(steps) - 2:06d}", f"step-{len(steps):06d}"] if len(steps) % 2 == 0 else len(ckpts) == 2
    for c in ckpts:
        names = {p.name for p in (out / "checkpoints" / c).iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt",
                "rng-rank0.safetensors", "state.json", "manifest.json"} <= names
    # the resolved config, every default filled in
    resolved = json.loads(json.dumps(__import__("yaml").safe_load((out / "tforge_config.yaml").read_text())))
    assert resolved["lr_scheduler_type"] == "cosine" and resolved["train_path"] == str(tmp_path / "train.jsonl")
    # the tokenizer serves the trained format
    tok = AutoTokenizer.from_pretrained(out)
    from template_forge import compile_template

    served = compile_template(load_spec("llama3"))  # the inference flavour, in both places transformers reads
    assert (out / "chat_template.jinja").read_text() == served
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == served
    spec = load_spec("llama3")
    for conv in conversations(5, seed=9):
        msgs = conv["messages"]
        assert tok.apply_chat_template(msgs, tokenize=False) == render(spec, msgs).text
        prompt = msgs[:-1]
        assert tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True) == render(
            spec, prompt, add_generation_prompt=True).text
    # the final adapter loads with PEFT and equals the last checkpoint's
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out)
    last = adapter(out / "checkpoints" / ckpts[-1])
    final = adapter(out)
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert any(torch.count_nonzero(v) for k, v in final.items() if "lora_B" in k)  # B starts at 0: it trained
    assert model.peft_config["default"].r == 4


def test_loss_is_normalised_by_trained_tokens_across_micro_batches(tmp_path, model_dir):
    """batch 2 × accumulation 1 and batch 1 × accumulation 2 see the same packs per step;
    with the loss divided by the step's trained tokens (not averaged per micro-batch) they
    take the same steps."""
    common = dict(model=model_dir, lora_config={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                                "target_modules": ["q_proj", "v_proj"]})
    a = run(make_run(tmp_path / "a", train_batch_size_per_device=2, gradient_accumulation_steps=1, **common))
    b = run(make_run(tmp_path / "b", train_batch_size_per_device=1, gradient_accumulation_steps=2, **common))
    sa, sb = read_metrics(a)[0], read_metrics(b)[0]
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb):
        assert x["trained_tokens"] == y["trained_tokens"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
    fa, fb = adapter(a), adapter(b)
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)
    # the micro-batches of a step hold different numbers of trained tokens, so a per-micro-batch
    # mean would have given other steps: the test can tell the two apart
    order = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert len({r["trained_tokens"] for r in order if "loss" in r}) > 1


def test_stop_and_resume_continue_exactly(tmp_path, model_dir):
    full = run(make_run(tmp_path / "full", model=model_dir))
    config = make_run(tmp_path / "split", model=model_dir)
    out = run(config, stop_at_step=3)
    assert not (out / "adapter_model.safetensors").exists()  # not finished: no final adapter
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    with pytest.raises(ConfigError, match="already holds a run .*Pass --resume"):
        run(config)
    with pytest.raises(ConfigError, match="learning_rate.*differs from the run"):
        run(config, "learning_rate=1e-3", resume=True)
    run(config, resume=True)
    expected, got = read_metrics(full), read_metrics(out)
    assert [r["step"] for r in got[0]] == [r["step"] for r in expected[0]]
    for x, y in zip(expected[0], got[0]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-9), x["step"]
    by_step = {r["step"]: r["eval_loss"] for r in got[1]}  # + one at step 3, where it stopped
    assert sorted(by_step) == sorted({r["step"] for r in expected[1]} | {3})
    for r in expected[1]:
        assert by_step[r["step"]] == pytest.approx(r["eval_loss"], rel=1e-6)
    fa, fb = adapter(full), adapter(out)
    assert all(torch.allclose(fa[k], fb[k], atol=1e-7) for k in fa)


def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path, model_dir):
    """A real crash: SIGKILL mid-run (after the first checkpoint), then --resume. The loss
    sequence equals the uninterrupted run's."""
    common = dict(model=model_dir, num_epochs=4, checkpoint_and_evaluation_frequency={"unit": "steps", "frequency": 3})
    full = run(make_run(tmp_path / "full", **common))
    config = make_run(tmp_path / "crash", **common)
    out = tmp_path / "crash" / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "template_forge.cli", "train", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-000003").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "adapter_model.safetensors").exists()
    killed_at = len(read_metrics(out)[0])
    result = CliRunner().invoke(main, ["train", str(config), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    expected, got = read_metrics(full), read_metrics(out)
    assert killed_at < len(expected[0])
    assert [r["step"] for r in got[0]] == [r["step"] for r in expected[0]]  # no step twice, none missing
    for x, y in zip(expected[0], got[0]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-9), x["step"]
    assert not list((out / "checkpoints").glob(".*partial"))


def test_continue_from_an_adapter(tmp_path, model_dir):
    first = run(make_run(tmp_path / "first", model=model_dir))
    cfg = make_run(tmp_path / "second", model=model_dir, initial_adapter_model_ckpt_path=str(first), num_epochs=1,
                   learning_rate=1e-12)  # barely moves: the continued adapter must be the first one
    second = run(cfg)
    fa, fb = adapter(first), adapter(second)
    assert fa.keys() == fb.keys()
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)
    # its first loss is the first run's end point, not a fresh adapter's
    assert read_metrics(second)[0][0]["loss"] < read_metrics(first)[0][0]["loss"]

    with pytest.raises(ConfigError) as exc:
        run(make_run(tmp_path / "third", model=model_dir, initial_adapter_model_ckpt_path=str(first),
                     lora_config={"r": 8, "target_modules": ["q_proj", "k_proj"]}))
    text = str(exc.value)
    assert "the adapter has rank 4, lora_config.r is 8" in text and "set lora_config.r=4" in text
    assert "the adapter targets ['q_proj', 'v_proj']" in text


def test_jsonl_preparation_is_reused_and_a_prepared_folder_is_accepted(tmp_path, model_dir):
    config = make_run(tmp_path, model=model_dir, num_epochs=1)
    logs: list[str] = []
    cfg, _ = load_config(config)
    out = train(cfg, progress=False, log=logs.append)
    assert any(line.startswith("train: prepared") for line in logs)
    manifest = (out / "data" / "train" / "manifest.json").stat().st_mtime_ns
    logs.clear()
    cfg, _ = load_config(config, ["output_dir=" + str(tmp_path / "out"), "num_epochs=2"])
    import shutil

    shutil.rmtree(out / "checkpoints")
    train(cfg, progress=False, log=logs.append)
    assert any(line.startswith("train: reused") for line in logs)
    assert (out / "data" / "train" / "manifest.json").stat().st_mtime_ns == manifest
    # an already prepared folder as train_path
    other = run(make_run(tmp_path / "p", model=model_dir, num_epochs=1, train_path=str(out / "data" / "train")))
    assert read_metrics(other)[0]


def test_merge_gives_the_same_logits_as_base_plus_adapter(tmp_path, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run(make_run(tmp_path, model=model_dir, num_epochs=1))
    result = CliRunner().invoke(main, ["merge", str(out), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).eval()
    ids = torch.tensor([[1, 5, 9, 30, 44, 2, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits,
                                  atol=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template == AutoTokenizer.from_pretrained(
        out).chat_template
    again = CliRunner().invoke(main, ["merge", str(out), "-o", str(tmp_path / "merged")])
    assert again.exit_code == 1 and "already exists" in again.output
    (out / "modeling_evil.py").write_text("open('pwned', 'w')\n")  # merge loads data only, as training does
    refused = CliRunner().invoke(main, ["merge", str(out), "-o", str(tmp_path / "merged2")])
    assert refused.exit_code == 1 and "holds Python code (modeling_evil.py)" in refused.output, refused.output
    assert not (tmp_path / "merged2").exists()


def test_plot_writes_a_png_and_a_summary(tmp_path, model_dir):
    out = run(make_run(tmp_path, model=model_dir, num_epochs=1))
    result = CliRunner().invoke(main, ["plot", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "train loss" in result.output and "eval loss" in result.output and "tokens/s" in result.output
    missing = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert missing.exit_code == 1 and "no metrics.jsonl" in missing.output


def test_cli_train_reports_config_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model_id: m\ntrain_path: t.jsonl\noutput_dir: o\nprompt_format: chatml\nnum_epoch: 2\n")
    result = CliRunner().invoke(main, ["train", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5, `num_epoch`: unknown key. Did you mean `num_epochs`?" in result.output
    assert "Traceback" not in result.output


def test_missing_tokenizer_and_missing_weights_are_explained(tmp_path, model_dir):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(Exception, match="no tokenizer.json beside the weights"):
        run(make_run(tmp_path / "a", model=bare))
    with pytest.raises(Exception, match="no such file or folder"):
        run(make_run(tmp_path / "b", model=tmp_path / "nowhere"))


def test_train_from_s3_base_weights_and_adapter(tmp_path, model_dir, s3_server, monkeypatch):
    """Bring-your-own weights on a real S3 endpoint (moto's server on 127.0.0.1): the base
    model and an adapter uploaded, then trained from their s3:// URLs."""
    from tforge_trainer.remote import upload

    first = run(make_run(tmp_path / "first", model=model_dir, num_epochs=1))
    bucket = s3_server.make_bucket()
    upload(model_dir, f"s3://{bucket}/models/tiny-llama")
    upload(first, f"s3://{bucket}/adapters/first")
    monkeypatch.setenv("TFORGE_CACHE_DIR", str(tmp_path / "cache"))
    s3_server.client().upload_file(str(tmp_path / "first" / "train.jsonl"), bucket, "data/train.jsonl")
    cfg = make_run(tmp_path / "s3", model=model_dir, num_epochs=1, learning_rate=1e-12,
                   initial_base_model_ckpt_path=f"s3://{bucket}/models/tiny-llama",
                   initial_adapter_model_ckpt_path=f"s3://{bucket}/adapters/first",
                   train_path=f"s3://{bucket}/data/train.jsonl")
    out = run(cfg)
    # the same packs as from the local file
    assert (out / "data" / "train" / "manifest.json").read_text().count("source_sha256") == 1
    assert json.loads((out / "data" / "train" / "manifest.json").read_text())["inputs"] == json.loads(
        (first / "data" / "train" / "manifest.json").read_text())["inputs"]
    cached = tmp_path / "cache" / "s3" / bucket / "models" / "tiny-llama"
    assert (cached / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    fa, fb = adapter(first), adapter(out)
    assert all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)  # continued from the S3 adapter
    resolved = (out / "tforge_config.yaml").read_text()
    assert f"s3://{bucket}/models/tiny-llama" in resolved
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        f"s3://{bucket}/models/tiny-llama"
    # merge fetches the base weights from the same URL (the cache)
    result = CliRunner().invoke(main, ["merge", str(out), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    with pytest.raises(Exception, match="no objects under this prefix"):
        run(make_run(tmp_path / "missing", model=model_dir, initial_base_model_ckpt_path=f"s3://{bucket}/nothing"))


def test_torchrun_ddp_on_cpu_two_ranks(tmp_path, model_dir):
    """``torchrun --nproc_per_node 2`` with gloo: the ranks train on disjoint packs, end with
    identical adapters, and take the same steps as one process with twice the batch (the
    loss is normalised by the trained tokens of all ranks)."""
    common = dict(model=model_dir, num_epochs=2, lora_config={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                                              "target_modules": ["q_proj", "v_proj"]})
    config = make_run(tmp_path / "ddp", train_batch_size_per_device=1, **common)
    single = run(make_run(tmp_path / "single", train_batch_size_per_device=2, **common))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "template_forge.cli", "train", str(config),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ddp" / "out"
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["adapter_sha256"][0] == ranks["adapter_sha256"][1]
    logs = [[json.loads(line) for line in (out / f"data-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(logs[0]) == len(logs[1]) > 0
    num_packs = json.loads((out / "data" / "train" / "manifest.json").read_text())["stats"]["packs"]
    seen = set()
    for a, b in zip(*logs):
        assert a["step"] == b["step"]
        packs_a = {i for mb in a["packs"] for i in mb}
        packs_b = {i for mb in b["packs"] for i in mb}
        assert not packs_a & packs_b, f"step {a['step']}: ranks share packs {packs_a & packs_b}"
        seen |= packs_a | packs_b
    assert seen == set(range(num_packs))
    expected, got = read_metrics(single)[0], read_metrics(out)[0]
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for x, y in zip(expected, got):
        assert x["trained_tokens"] == y["trained_tokens"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
    fa, fb = adapter(single), adapter(out)
    assert all(torch.allclose(fa[k], fb[k], atol=1e-5) for k in fa)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_task_causal_lm_trains_every_token_instruction_tuning_only_the_assistant(tmp_path, model_dir):
    assistant = run(make_run(tmp_path / "a", model=model_dir, num_epochs=1))
    every = run(make_run(tmp_path / "c", model=model_dir, num_epochs=1, task="causal_lm"))
    sa = json.loads((assistant / "data" / "train" / "manifest.json").read_text())
    sc = json.loads((every / "data" / "train" / "manifest.json").read_text())
    assert sa["inputs"]["policy"] == "assistant" and sc["inputs"]["policy"] == "causal_lm"
    assert sc["stats"]["trained_tokens"] == sc["stats"]["tokens"]
    assert sa["stats"]["trained_tokens"] < sa["stats"]["tokens"]
    # what the loss counts: every token but each sample's first (nothing predicts it)
    trained = sum(r["trained_tokens"] for r in read_metrics(every)[0])
    steps = len(read_metrics(every)[0])
    assert steps and trained > sum(r["trained_tokens"] for r in read_metrics(assistant)[0])


def test_gradient_checkpointing_changes_memory_not_the_steps(tmp_path, model_dir):
    common = dict(model=model_dir, num_epochs=1, lora_config={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                                              "target_modules": ["q_proj", "v_proj"]})
    plain = read_metrics(run(make_run(tmp_path / "a", gradient_checkpointing=False, **common)))[0]
    recomputed = read_metrics(run(make_run(tmp_path / "b", gradient_checkpointing=True, **common)))[0]
    assert [r["loss"] for r in plain] == pytest.approx([r["loss"] for r in recomputed], rel=1e-6)
    assert [r["grad_norm"] for r in plain] == pytest.approx([r["grad_norm"] for r in recomputed], rel=1e-5)
    assert all(r["grad_norm"] > 0 for r in recomputed)  # the LoRA weights did get gradients through the recompute


def test_a_second_run_into_a_live_runs_output_dir_is_refused(tmp_path, model_dir):
    from template_forge.errors import DataError
    from template_forge.locks import output_lock

    cfg, _ = load_config(make_run(tmp_path, model=model_dir, num_epochs=1))
    with output_lock(cfg.output_dir):  # stands for a live `tforge train` (its rank 0)
        with pytest.raises(DataError, match=r"another tforge run is writing this output folder \(pid \d+"):
            train(cfg, progress=False, log=lambda _: None)
    assert not Path(cfg.output_dir).exists()
    assert read_metrics(run(make_run(tmp_path, model=model_dir, num_epochs=1)))[0]  # free again: it trains
