"""A tiny PNG chart writer (no dependencies): scatter/line plots and histograms.

Why not matplotlib: the bench would need it (and numpy, pillow, ...) in the lock, and any
change to constraints.txt changes the node image's content hash, forcing every engineer
and CI to rebuild the image for a dependency the node never uses. These charts need axes,
ticks, points, lines, bars and short labels; a 5x7 bitmap font and a PNG encoder
(zlib + crc32 from the standard library) are enough.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
GREY: RGB = (200, 200, 200)
COLORS: tuple[RGB, ...] = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14))

# 5x7 glyphs, one int per row, bit 4 = leftmost pixel
FONT: dict[str, tuple[int, ...]] = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (14, 17, 19, 21, 25, 17, 14),
    "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2),
    "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14),
    "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 31, 17, 17, 17),
    "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15),
    "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17),
    "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30),
    "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4),
    "Z": (31, 1, 2, 4, 8, 16, 31),
    ".": (0, 0, 0, 0, 0, 12, 12),
    ",": (0, 0, 0, 0, 12, 4, 8),
    "-": (0, 0, 0, 31, 0, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 31),
    "/": (1, 1, 2, 4, 8, 16, 16),
    "(": (2, 4, 8, 8, 8, 4, 2),
    ")": (8, 4, 2, 2, 2, 4, 8),
    "%": (24, 25, 2, 4, 8, 19, 3),
    ":": (0, 12, 12, 0, 12, 12, 0),
    "=": (0, 0, 31, 0, 31, 0, 0),
    "+": (0, 4, 4, 31, 4, 4, 0),
    "<": (2, 4, 8, 16, 8, 4, 2),
    ">": (8, 4, 2, 1, 2, 4, 8),
    "*": (0, 4, 21, 14, 21, 4, 0),
    "?": (14, 17, 1, 2, 4, 0, 4),
}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(WHITE * (width * height))

    def set(self, x: int, y: int, c: RGB) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i : i + 3] = bytes(c)

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: RGB) -> None:
        for y in range(max(0, min(y0, y1)), min(self.h, max(y0, y1) + 1)):
            for x in range(max(0, min(x0, x1)), min(self.w, max(x0, x1) + 1)):
                self.set(x, y, c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: RGB, width: int = 1) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        r = width // 2
        while True:
            self.rect(x0 - r, y0 - r, x0 + r, y0 + r, c) if r else self.set(x0, y0, c)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def dot(self, x: int, y: int, c: RGB, r: int = 3) -> None:
        for yy in range(-r, r + 1):
            for xx in range(-r, r + 1):
                if xx * xx + yy * yy <= r * r:
                    self.set(x + xx, y + yy, c)

    def text(self, x: int, y: int, s: str, c: RGB = BLACK, scale: int = 1) -> None:
        for ch in s.upper():
            rows = FONT.get(ch, FONT["?"])
            for ry, bits in enumerate(rows):
                for rx in range(5):
                    if bits & (1 << (4 - rx)):
                        self.rect(
                            x + rx * scale,
                            y + ry * scale,
                            x + rx * scale + scale - 1,
                            y + ry * scale + scale - 1,
                            c,
                        )
            x += 6 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[3 * y * self.w : 3 * (y + 1) * self.w]) for y in range(self.h)
        )

        def chunk(tag: bytes, data: bytes) -> bytes:
            body = tag + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def text_width(s: str, scale: int = 1) -> int:
    return 6 * scale * len(s)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2, 5 x 10^k steps)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick is at or beyond hi
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


class Axes:
    """Plot area with linear x/y scales, ticks, grid and labels."""

    def __init__(
        self,
        canvas: Canvas,
        xr: tuple[float, float],
        yr: tuple[float, float],
        title: str,
        xlabel: str,
        ylabel: str,
    ) -> None:
        self.c = canvas
        self.left, self.right, self.top, self.bottom = 70, canvas.w - 20, 40, canvas.h - 50
        self.xt = nice_ticks(*xr)
        self.yt = nice_ticks(*yr)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        c = canvas
        c.text((c.w - text_width(title, 2)) // 2, 10, title, scale=2)
        for t in self.yt:
            y = self.py(t)
            c.line(self.left, y, self.right, y, GREY)
            c.text(self.left - 6 - text_width(_fmt(t)), y - 3, _fmt(t))
        for t in self.xt:
            x = self.px(t)
            c.line(x, self.top, x, self.bottom, GREY)
            c.text(x - text_width(_fmt(t)) // 2, self.bottom + 6, _fmt(t))
        c.line(self.left, self.bottom, self.right, self.bottom, BLACK)
        c.line(self.left, self.top, self.left, self.bottom, BLACK)
        c.text((self.left + self.right - text_width(xlabel)) // 2, c.h - 18, xlabel)
        c.text(4, self.top - 14, ylabel)

    def px(self, x: float) -> int:
        span = (self.x1 - self.x0) or 1.0
        return round(self.left + (x - self.x0) / span * (self.right - self.left))

    def py(self, y: float) -> int:
        span = (self.y1 - self.y0) or 1.0
        return round(self.bottom - (y - self.y0) / span * (self.bottom - self.top))

    def legend(self, items: Sequence[tuple[str, RGB]]) -> None:
        y = self.top + 6
        for label, color in items:
            x = self.left + 10
            self.c.rect(x, y, x + 10, y + 6, color)
            self.c.text(x + 16, y, label)
            y += 12


def line_chart(
    path: Path,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Points joined by lines, one colour per series, legend top left."""
    pts = [p for _, s in series for p in s]
    c = Canvas(*size)
    xs = [p[0] for p in pts] or [0.0, 1.0]
    ys = [p[1] for p in pts] or [0.0, 1.0]
    ax = Axes(c, (min(0.0, min(xs)), max(xs)), (0.0, max(ys) * 1.1 or 1.0), title, xlabel, ylabel)
    for i, (_, s) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        prev = None
        for x, y in sorted(s):
            p = (ax.px(x), ax.py(y))
            if prev:
                c.line(*prev, *p, color, width=2)
            c.dot(*p, color)
            prev = p
    ax.legend([(name, COLORS[i % len(COLORS)]) for i, (name, _) in enumerate(series)])
    path.write_bytes(c.png())
    return path


def histogram(
    path: Path,
    series: Sequence[tuple[str, Sequence[float]]],
    title: str,
    xlabel: str,
    bins: int = 20,
    size: tuple[int, int] = (720, 440),
) -> Path:
    """Overlaid histograms (side-by-side bars per bin), one colour per series."""
    allv = [v for _, s in series for v in s]
    c = Canvas(*size)
    lo, hi = (min(allv), max(allv)) if allv else (0.0, 1.0)
    lo = min(0.0, lo)
    hi = hi if hi > lo else lo + 1.0
    width = (hi - lo) / bins
    counts = []
    for _, s in series:
        k = [0] * bins
        for v in s:
            k[min(bins - 1, int((v - lo) / width))] += 1
        counts.append(k)
    top = max((max(k) for k in counts), default=1) or 1
    ax = Axes(c, (lo, hi), (0.0, max(5.0, top * 1.1)), title, xlabel, "COUNT")
    n = max(1, len(series))
    for i, k in enumerate(counts):
        color = COLORS[i % len(COLORS)]
        for b, cnt in enumerate(k):
            if not cnt:
                continue
            x0 = ax.px(lo + b * width)
            x1 = ax.px(lo + (b + 1) * width)
            w = max(1, (x1 - x0 - 2) // n)
            xa = x0 + 1 + i * w
            c.rect(xa, ax.py(cnt), xa + w - 1, ax.py(0) - 1, color)
    ax.legend(
        [(f"{name} (N={len(s)})", COLORS[i % len(COLORS)]) for i, (name, s) in enumerate(series)]
    )
    path.write_bytes(c.png())
    return path
