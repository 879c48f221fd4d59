"""The live connection graph: who is connected to whom, and how, drawn from one status snapshot.

Networks are clusters (public on top, private ones below, their NAT router on the border);
direct connections are solid lines, relayed connections dashed, reservations dotted.
SVG is written directly (no dependency, works everywhere); PNG goes through Graphviz `dot`
when it is installed, because rasterising is not worth a Python dependency here.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from harness.client import TestnetStatus
from harness.errors import SentrynetError
from harness.model import Network, Router, Testnet


@dataclass(frozen=True)
class Edge:
    a: str
    b: str
    kind: str  # direct | relayed | reservation
    via: str | None = None  # relay node name for relayed edges


@dataclass
class Graph:
    """Nodes placed in network clusters plus deduplicated edges; the input of both writers."""

    testnet: str
    nets: list[Network]  # data networks
    members: dict[str, list[str]]  # net -> node names (first network of each node only)
    routers: list[Router]
    edges: list[Edge]
    down: set[str] = field(default_factory=set)  # nodes whose API did not answer
    unknown_peers: int = 0  # connections to peer ids outside the testnet
    also_on: dict[str, list[str]] = field(default_factory=dict)  # node -> its other networks


def build_graph(snapshot: TestnetStatus, testnet: Testnet) -> Graph:
    """Fold a status snapshot into a graph: each connection reported by either end, once."""
    nets, routers = list(testnet.networks), list(testnet.routers)
    names = snapshot.name_of_peer()
    members: dict[str, list[str]] = {n.name: [] for n in nets}
    public = {n.name for n in nets if n.public}
    also: dict[str, list[str]] = {}
    for node in snapshot.nodes:
        # a multi-homed node (a sentry) is drawn where it is reachable from: the public side
        ordered = sorted(node.target.networks, key=lambda n: n not in public)
        home = next((n for n in ordered if n in members), None)
        if home is not None:
            members[home].append(node.name)
            others = [n for n in node.target.networks if n != home]
            if others:
                also[node.name] = others
    seen: set[tuple[str, str, str]] = set()
    edges: list[Edge] = []
    unknown = 0

    def add(a: str, b: str, kind: str, via: str | None = None) -> None:
        lo, hi = sorted((a, b))
        key = (lo, hi, kind)
        if key not in seen and a != b:
            seen.add(key)
            edges.append(Edge(lo, hi, kind, via))

    for node in snapshot.nodes:
        for conn in node.connections:
            peer = names.get(str(conn.peer))
            if peer is None:
                unknown += 1
                continue
            kind = "relayed" if conn.kind == "relayed" else "direct"
            relay = names.get(str(conn.relay)) if conn.relay else None
            add(node.name, peer, kind, relay)
        for resv in node.reservations:
            relay = names.get(str(resv.relay))
            if relay is not None:
                add(node.name, relay, "reservation")
    return Graph(
        testnet=snapshot.testnet,
        nets=nets,
        members=members,
        routers=routers,
        edges=edges,
        down={n.name for n in snapshot.nodes if n.down},
        unknown_peers=unknown,
        also_on=also,
    )


# --------------------------------------------------------------------------- SVG

NODE_R = 22
NODE_GAP = 90
PAD = 30
CLUSTER_H = 170
STYLE = {
    "direct": 'stroke="#1b5e20" stroke-width="2.5"',
    "relayed": 'stroke="#1565c0" stroke-width="2" stroke-dasharray="8 5"',
    "reservation": 'stroke="#757575" stroke-width="1.5" stroke-dasharray="2 4"',
}


def _layout(
    g: Graph,
) -> tuple[
    dict[str, tuple[float, float]], list[tuple[Network, float, float, float, float]], float, float
]:
    """Place clusters (public row on top, private row below) and nodes inside them.

    Nodes of a cluster sit on a half ellipse, so no three are on one line and an edge never
    runs through a node it does not touch.
    """
    pos: dict[str, tuple[float, float]] = {}
    boxes: list[tuple[Network, float, float, float, float]] = []
    rows = [[n for n in g.nets if n.public], [n for n in g.nets if not n.public]]
    sizes = {n.name: max(220.0, len(g.members.get(n.name, [])) * NODE_GAP + 60) for n in g.nets}
    row_widths = [sum(sizes[n.name] for n in row) + PAD * (len(row) - 1) for row in rows]
    width = max(row_widths) + 2 * PAD
    y: float = PAD + 30
    for row, row_w in zip(rows, row_widths, strict=True):
        if not row:
            continue
        x: float = (width - row_w) / 2
        for net in row:
            w = sizes[net.name]
            boxes.append((net, x, y, w, CLUSTER_H))
            names = g.members.get(net.name, [])
            cx, cy = x + w / 2, y + CLUSTER_H / 2 - 6
            rx, ry = w / 2 - NODE_R - 24, CLUSTER_H / 2 - NODE_R - 20
            for i, name in enumerate(names):
                if len(names) == 1:
                    pos[name] = (cx, cy)
                    continue
                theta = math.pi * (0.1 + 0.8 * i / (len(names) - 1))
                # public cluster: arc opens downwards (towards the routers); private: upwards
                sign = 1.0 if net.public else -1.0
                pos[name] = (
                    cx - rx * math.cos(theta),
                    cy + sign * ry * math.sin(theta) - sign * ry / 2,
                )
            x += w + PAD
        y += CLUSTER_H + 2 * PAD + 20
    # routers sit on the top border of their private cluster, off centre
    for r in g.routers:
        for net, bx, by, bw, _bh in boxes:
            if net.name == r.network:
                pos[r.name] = (bx + bw - 50, by)
    return pos, boxes, width, y + 40


def _net_label(net: Network) -> str:
    kind = "public" if net.public else "private"
    name = net.name if net.name == kind else f"{net.name} ({kind})"
    return f"{name} {net.subnet}".strip()


def to_svg(g: Graph) -> str:
    pos, boxes, width, height = _layout(g)
    width = max(width, 620.0)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{PAD}" y="22" font-size="15" font-weight="bold">'
        f"sentrynet testnet {escape(g.testnet)}</text>",
    ]
    for net, x, y, w, h in boxes:
        fill = "#e3f2fd" if net.public else "#fff8e1"
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="10" '
            f'fill="{fill}" stroke="#90a4ae"/>'
        )
        label = _net_label(net)
        ly = y + 16 if net.public else y + h - 8  # private: the router sits on the top edge
        out.append(f'<text x="{x + 8:.0f}" y="{ly:.0f}" fill="#455a64">{escape(label)}</text>')
    # router uplinks: private cluster border up to the public cluster
    public_boxes = {net.name: (x, y, w, h) for net, x, y, w, h in boxes if net.public}
    for r in g.routers:
        if r.name in pos and r.public_network in public_boxes:
            rx, ry = pos[r.name]
            px, py, pw, ph = public_boxes[r.public_network]
            tx = min(max(rx, px + 10), px + pw - 10)
            out.append(
                f'<line x1="{rx:.0f}" y1="{ry:.0f}" x2="{tx:.0f}" y2="{py + ph:.0f}" '
                f'stroke="#b0bec5" stroke-width="6"/>'
            )
    for e in g.edges:
        if e.a not in pos or e.b not in pos:
            continue
        (x1, y1), (x2, y2) = pos[e.a], pos[e.b]
        title = f"{e.kind} {e.a} - {e.b}" + (f" via {e.via}" if e.via else "")
        # bow relayed and reservation edges to opposite sides so none hides a direct one
        bow = {"direct": 0.0, "relayed": 40.0, "reservation": -30.0}[e.kind]
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        dx, dy = x2 - x1, y2 - y1
        norm = math.hypot(dx, dy) or 1.0
        cx, cy = mx - dy / norm * bow, my + dx / norm * bow
        path = f"M{x1:.0f},{y1:.0f} Q{cx:.0f},{cy:.0f} {x2:.0f},{y2:.0f}"
        out.append(
            f'<path d="{path}" fill="none" {STYLE[e.kind]}><title>{escape(title)}</title></path>'
        )
    routers = {r.name for r in g.routers}
    for name, (x, y) in pos.items():
        if name in routers:
            out.append(
                f'<rect x="{x - 34:.0f}" y="{y - 12:.0f}" width="68" height="24" rx="4" '
                f'fill="#cfd8dc" stroke="#546e7a"/>'
                f'<text x="{x:.0f}" y="{y + 4:.0f}" text-anchor="middle">{escape(name)}</text>'
            )
            continue
        fill = "#ffcdd2" if name in g.down else "#ffffff"
        out.append(
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{NODE_R}" fill="{fill}" stroke="#263238" '
            f'stroke-width="1.5"/><text x="{x:.0f}" y="{y + 4:.0f}" text-anchor="middle">'
            f"{escape(name)}</text>"
        )
        if name in g.also_on:
            out.append(
                f'<text x="{x:.0f}" y="{y - NODE_R - 5:.0f}" text-anchor="middle" '
                f'font-size="10" fill="#455a64">also on {escape(", ".join(g.also_on[name]))}</text>'
            )
    ly = height - 18
    legend = [
        ("direct", "direct"),
        ("relayed", "relayed (circuit)"),
        ("reservation", "reservation"),
    ]
    lx = PAD
    for kind, text in legend:
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 40}" y2="{ly}" {STYLE[kind]}/>')
        out.append(f'<text x="{lx + 46}" y="{ly + 4}">{escape(text)}</text>')
        lx += 170
    if g.unknown_peers:
        out.append(
            f'<text x="{lx}" y="{ly + 4}" fill="#b71c1c">'
            f"{g.unknown_peers} connection(s) to peers outside the testnet</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- DOT / PNG


def _q(s: str) -> str:
    return '"' + s.replace('"', r"\"") + '"'


def to_dot(g: Graph) -> str:
    lines = [f"graph {_q(g.testnet)} {{", "  compound=true; node [fontname=sans];"]
    for net in g.nets:
        lines.append(f"  subgraph {_q('cluster_' + net.name)} {{")
        lines.append(f"    label={_q(_net_label(net))};")
        lines.append(f"    style=filled; color={_q('#e3f2fd' if net.public else '#fff8e1')};")
        for name in g.members.get(net.name, []):
            fill = "#ffcdd2" if name in g.down else "white"
            lines.append(f"    {_q(name)} [shape=circle, style=filled, fillcolor={_q(fill)}];")
        for r in g.routers:
            if r.network == net.name:
                lines.append(
                    f"    {_q(r.name)} [shape=box, style=filled, fillcolor={_q('#cfd8dc')}];"
                )
        lines.append("  }")
    style = {
        "direct": 'style=solid, penwidth=2, color="#1b5e20"',
        "relayed": 'style=dashed, color="#1565c0"',
        "reservation": 'style=dotted, color="#757575"',
    }
    for e in g.edges:
        lines.append(f"  {_q(e.a)} -- {_q(e.b)} [{style[e.kind]}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(g: Graph, out: Path) -> None:
    """Write the graph; the format follows the suffix (.svg, .png, .dot)."""
    suffix = out.suffix.lower()
    if suffix == ".svg":
        out.write_text(to_svg(g))
    elif suffix == ".dot":
        out.write_text(to_dot(g))
    elif suffix == ".png":
        dot = shutil.which("dot")
        if dot is None:
            raise SentrynetError(
                "PNG output needs Graphviz `dot` (Debian: apt-get install graphviz); "
                "or write SVG, which needs nothing: --out graph.svg"
            )
        done = subprocess.run(
            [dot, "-Tpng", "-o", str(out)], input=to_dot(g), text=True, capture_output=True
        )
        if done.returncode != 0:
            raise SentrynetError(f"dot -Tpng failed: {done.stderr.strip()}")
    else:
        raise SentrynetError(f"--out {out}: unknown format {suffix!r}; use .svg, .png or .dot")
