"""Pictures of dataset statistics and training runs: text histograms, and PNGs. Needs matplotlib (``pip install 'template-forge[plot]'``),
imported only when a picture is asked for."""

from __future__ import annotations

import io

import numpy as np

from template_forge.errors import TemplateForgeError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TemplateForgeError("drawing a PNG needs matplotlib: pip install 'template-forge[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram(values, hi: int, bins: int):
    """Counts and edges of ``bins`` equal bins of ``[0, hi]``; values above ``hi`` count in the last bin."""
    return np.histogram(np.minimum(values, hi), bins=bins, range=(0, max(hi, 1)))


def text_histogram(title: str, values, hi: int, bins: int, width: int = 40) -> str:
    """Horizontal bars, one per bin of ``[0, hi]``.

    Examples:
        >>> import numpy as np
        >>> print(text_histogram("x", np.array([1, 1, 3]), 4, 2, width=4))
        x
                 0 –       2  ████  2
                 2 –       4  ██    1
    """
    counts, edges = histogram(values, hi, bins)
    top = max(int(counts.max()) if counts.size else 0, 1)
    lines = [title]
    more = bool(values.size) and values.max() > hi
    for k, (c, lo, up) in enumerate(zip(counts, edges[:-1], edges[1:])):
        bar = "█" * int(round(width * c / top))
        upper = "…" if more and k == len(counts) - 1 else f"{up:,.0f}"
        lines.append(f"  {lo:>8,.0f} – {upper:>7}  {bar:<{width}}  {c:,}")
    return "\n".join(lines)


def histograms_png(hists: dict[str, tuple[np.ndarray, np.ndarray]], *, title: str = "") -> bytes:
    """One bar chart per ``{title: (counts, edges)}`` (as :func:`numpy.histogram` returns), side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(hists), figsize=(5.5 * len(hists), 3.8), squeeze=False)
    for ax, (name, (counts, edges)) in zip(axes[0], hists.items()):
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b7dd8", edgecolor="white")
        ax.set_xlabel(name)
        ax.set_ylabel("count")
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _png(plt, fig)


def _png(plt, fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def loss_curves_png(records: list[dict], *, title: str = "") -> bytes:
    """Training loss (per optimizer step) and evaluation loss against the step, with the
    learning rate on a second axis, from ``metrics.jsonl`` records."""
    plt = _pyplot()
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    lrs = [(r["step"], r["lr"]) for r in records if "lr" in r]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if train:
        ax.plot(*zip(*train), color="#3b7dd8", lw=1.4, label="train loss")
    if evals:
        ax.plot(*zip(*evals), color="#d8573b", marker="o", lw=1.4, label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over trained tokens)")
    ax.grid(alpha=0.3)
    if lrs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*lrs), color="#999999", lw=1, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [h.get_label() for h in lines], loc="upper right")
    else:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return _png(plt, fig)
