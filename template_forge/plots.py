"""Pictures (PNG) of dataset statistics. Needs matplotlib (``pip install 'template-forge[plot]'``),
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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
