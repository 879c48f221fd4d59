"""Topology variants for tests: a scenario file with some nodes changed (another libp2p
implementation, `api: none`), written next to the test, so the variant never drifts from
the scenario."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


def with_node_fields(source: Path, out_dir: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """`source` with the given fields set on the named nodes, as out_dir/<stem>-<tag>.yaml."""
    doc = yaml.safe_load(source.read_text())
    for node, fields in changes.items():
        if node not in doc["nodes"]:
            raise KeyError(f"{source}: no node {node!r}")
        doc["nodes"][node].update(fields)
    said = "-".join(f"{n}{''.join(str(v) for v in f.values())}" for n, f in sorted(changes.items()))
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", said)[:60]  # a file name, whatever the values
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{source.stem}-{tag}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def with_impl(source: Path, out_dir: Path, impls: dict[str, str]) -> Path:
    """`source` with `impl:` set on the named nodes, as out_dir/<stem>-<impls>.yaml."""
    return with_node_fields(source, out_dir, {n: {"impl": i} for n, i in impls.items()})
