"""Topology variants for tests: a scenario file with some nodes switched to another libp2p
implementation, written next to the test, so the variant never drifts from the scenario."""

from __future__ import annotations

from pathlib import Path

import yaml


def with_impl(source: Path, out_dir: Path, impls: dict[str, str]) -> Path:
    """`source` with `impl:` set on the named nodes, as out_dir/<stem>-<impls>.yaml."""
    doc = yaml.safe_load(source.read_text())
    for node, impl in impls.items():
        if node not in doc["nodes"]:
            raise KeyError(f"{source}: no node {node!r}")
        doc["nodes"][node]["impl"] = impl
    tag = "-".join(f"{n}{i}" for n, i in sorted(impls.items()))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{source.stem}-{tag}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
