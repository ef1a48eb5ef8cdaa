"""Figure set-up shared by every plot (evaluation, profiler, ablation scripts).

Plots are written by jobs without a display, so the backend is Agg; figures are closed once saved,
since pyplot keeps every open figure alive (a long sweep would otherwise grow without bound).
Application code only: the core library never loads matplotlib.
"""

from __future__ import annotations

import os

__all__ = ["save_figure", "subplots"]


def subplots(*args, **kwargs):
    """``plt.subplots(*args, **kwargs)`` on the headless Agg backend: ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Lay out, save and close ``fig``."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
