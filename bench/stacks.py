"""Shares of CPU samples by function and module group, from py-spy's collapsed stacks.

Why a sampler: cProfile charges its own per-call cost to every Python call, so it
overstates code made of many small calls (docs/bench.md: a conversion cProfile put at a
twentieth of a node's CPU saved nothing when removed). py-spy reads the process from
outside at a fixed rate (`--nonblocking`: the node is never stopped), and only running
threads are sampled, so a share is a share of the CPU the node actually used.

py-spy does not always tell a thread waiting in epoll from a running one; a sample whose
leaf is trio's epoll wait is counted as idle and left out of the shares.

Input: `py-spy record --format raw --full-filenames` lines, `frame;frame;...;leaf count`, each frame
`function (path:line)`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")
# packages whose subpackages are worth telling apart (libp2p.pubsub vs libp2p.stream_muxer)
_SPLIT = ("libp2p", "node")
# leaf functions that are a thread waiting for I/O, not using the CPU
IDLE_LEAVES = ("EpollIOManager.get_events",)


def frame_group(frame: str) -> str:
    """The module group of one frame: libp2p.<subpackage>, node.<module>, trio, a
    site-packages distribution, or stdlib."""
    m = _FRAME.match(frame)
    return path_group(m.group("path") if m else frame)


def path_group(path: str) -> str:
    """The module group of a source file (py-spy's frames, cProfile's file names alike):
    libp2p.<subpackage>, node.<module>, a site-packages distribution (trio, multiaddr),
    builtins (cProfile's `~` and `<...>` pseudo-files), or stdlib."""
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        parts = path.split("site-packages/", 1)[1].split("/")
    elif "/node/" in path:
        parts = ["node", *path.split("/node/", 1)[1].split("/")]
    elif path.startswith("~") or "<" in path:
        return "builtins"
    else:
        return "stdlib"
    top = parts[0].removesuffix(".py")
    if top in _SPLIT and len(parts) > 1:
        return f"{top}.{parts[1].removesuffix('.py')}"
    return top


def frame_name(frame: str) -> str:
    """`group:function:line`, the form bench/idle_profile.py reports."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{frame_group(frame)}:{m.group('func')}:{m.group('line') or '?'}"


@dataclass(frozen=True)
class Shares:
    samples: int  # running samples, the shares' denominator
    idle: int  # samples waiting in epoll, left out
    by_group: dict[str, float]
    top_self: list[tuple[str, float]]
    top_inclusive: list[tuple[str, float]]


def shares(path: Path, top: int = 25) -> Shares:
    """Self time by group and by function, inclusive time by function (a function counted
    once per sample however often it recurs in the stack)."""
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for raw in path.read_text().splitlines():
        stack, _, count = raw.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(IDLE_LEAVES):
            idle += n
            continue
        frames = [frame_name(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        groups[frames[-1].split(":", 1)[0]] += n
        for f in set(frames):
            inclusive[f] += n
    if total == 0:
        return Shares(0, idle, {}, [], [])

    def ranked(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in c.most_common(k)]

    return Shares(
        samples=total,
        idle=idle,
        by_group=dict(ranked(groups, 15)),
        top_self=ranked(own, top),
        top_inclusive=ranked(inclusive, top * 2),
    )
