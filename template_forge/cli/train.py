"""``tforge train``, ``tforge plot`` and ``tforge merge``.

The trainer (package ``tforge_trainer``, extra ``[train]``) is imported only inside the
commands, so ``tforge`` itself never loads torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from template_forge.errors import DataError, TemplateForgeError


def _trainer():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401

        import tforge_trainer  # noqa: F401
    except ImportError as exc:
        raise TemplateForgeError(f"training needs the [train] extra ({exc.name} is missing): "
                                 "pip install torch first (the build for your GPU), then "
                                 "pip install 'template-forge[train]'") from None


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--resume", is_flag=True, help="Continue the run in output_dir from its latest checkpoint.")
@click.option("--stop-at-step", type=click.IntRange(min=1),
              help="Train up to this optimizer step, save a checkpoint there and exit; --resume continues.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(config: str, overrides: tuple[str, ...], resume: bool, stop_at_step: int | None, quiet: bool) -> None:
    """Train a LoRA adapter as an llmforge-style CONFIG says.

    KEY=VALUE pairs override the YAML (`learning_rate=2e-4`, `lora_config.r=16`). Under
    `torchrun --nproc_per_node N` the run is data-parallel.
    """
    from tforge_trainer.config import load_config

    cfg, warnings = load_config(config, overrides)
    _trainer()
    from tforge_trainer.recipe import train

    # rank 0 prints the config's warnings first
    train(cfg, resume=resume, stop_at_step=stop_at_step, progress=not quiet, warnings=warnings)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line picture of a series (resampled to ``width``).

    Examples:
        >>> sparkline([3, 2, 1, 0])
        '█▆▃▁'
    """
    if not values:
        return ""
    if len(values) > width:
        values = [values[int(i * len(values) / width)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[round((v - lo) / span * (len(_BARS) - 1))] for v in values)


@click.command("plot")
@click.argument("output_dir", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG to write (default: OUTPUT_DIR/loss.png).")
def plot_cmd(output_dir: str, output: str | None) -> None:
    """Loss curves of a training run (metrics.jsonl) as a PNG, and a summary here."""
    from template_forge.io import write_atomic
    from template_forge.plots import loss_curves_png
    from tforge_trainer.config import read_resolved  # neither imports torch: plots need no [train] extra
    from tforge_trainer.metrics import read_metrics

    folder = Path(output_dir)
    records = read_metrics(folder)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train:
        raise DataError(f"{folder / 'metrics.jsonl'}: no training steps recorded yet.")
    png = Path(output) if output else folder / "loss.png"
    model_id = (read_resolved(folder) or {}).get("model_id")
    title = f"{model_id} — {folder.resolve().name}" if model_id else str(folder)
    write_atomic(png, loss_curves_png(records, title=title))
    click.echo(f"train loss  {sparkline([r['loss'] for r in train])}  "
               f"{train[0]['loss']:.4f} → {train[-1]['loss']:.4f} over {train[-1]['step']} steps")
    if evals:
        click.echo(f"eval loss   {sparkline([r['eval_loss'] for r in evals])}  "
                   f"{evals[0]['eval_loss']:.4f} → {evals[-1]['eval_loss']:.4f} "
                   f"(best {min(r['eval_loss'] for r in evals):.4f} at step "
                   f"{min(evals, key=lambda r: r['eval_loss'])['step']})")
    speed = [r["tokens_per_s"] for r in train[1:]] or [train[0]["tokens_per_s"]]
    click.echo(f"throughput  {sorted(speed)[len(speed) // 2]:.0f} tokens/s (median); "
               f"{train[-1]['total_trained_tokens']} trained tokens")
    click.echo(f"wrote {png}")


@click.command("merge")
@click.argument("output_dir", type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for the merged model.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="Weights dtype of the merged model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def merge_cmd(output_dir: str, output: str, dtype: str, overwrite: bool) -> None:
    """Merge a run's adapter into its base weights (save_pretrained layout + tokenizer)."""
    _trainer()
    from tforge_trainer.merge import merge

    merged = merge(output_dir, output, dtype=dtype, overwrite=overwrite, progress=sys.stderr.isatty())
    click.echo(f"wrote {merged}")
