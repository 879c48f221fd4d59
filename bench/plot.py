"""The bench's PNG charts with matplotlib (the `bench` extra): a line chart and a histogram.

Figures are drawn on matplotlib's Agg canvas directly, without pyplot: no display, no global
figure state, nothing to close. matplotlib stays out of the node image: the image's tag
hashes the node's own lock (constraints-node.txt) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100


def _figure(size: tuple[int, int]) -> Figure:
    """A figure of exactly `size` pixels (width, height) when saved at DPI."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def line_chart(
    path: Path,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Points joined by lines, one colour per series, legend top left, y from 0."""
    fig = _figure(size)
    ax = fig.add_subplot()
    for name, points in series:
        ordered = sorted(points)
        ax.plot([x for x, _ in ordered], [y for _, y in ordered], marker="o", label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, dpi=DPI)
    return path


def histogram(
    path: Path,
    series: Sequence[tuple[str, Sequence[float]]],
    title: str,
    xlabel: str,
    bins: int = 20,
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Side-by-side bars per bin, one colour per series, over one set of bins from 0."""
    values = [v for _, s in series for v in s]
    lo = min([0.0, *values])
    hi = max(values, default=lo)
    hi = hi if hi > lo else lo + 1.0
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    fig = _figure(size)
    ax = fig.add_subplot()
    if series:
        ax.hist(
            [list(s) for _, s in series],
            bins=edges,
            label=[f"{name} (N={len(s)})" for name, s in series],
        )
        ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, dpi=DPI)
    return path
