"""`impl: python | rust` per node: validated like every other field. The rust reference
node (peers/rust) runs the chain on the same wire, so any role and serve_sync are allowed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_topology import BASE, error_for, write

from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology

REPO = Path(__file__).resolve().parents[2]


def with_rust(tmp_path: Path, **node2: Any) -> Path:
    """BASE plus node2, a full node behind router a, on the rust reference node."""
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node2"] = {
        "role": "full",
        "networks": ["a"],
        "relay_mode": "client",
        "relay_servers": ["node3"],
        "impl": "rust",
        **node2,
    }
    return write(tmp_path, doc)


def test_impl_defaults_to_python_and_rust_is_recorded(tmp_path: Path) -> None:
    topo = load_topology(with_rust(tmp_path))
    assert {n.name: n.impl for n in topo.nodes} == {
        "node0": "python",
        "node3": "python",
        "node4": "python",
        "node2": "rust",
    }
    tn = build_testnet(topo)
    assert tn.rust_nodes == ("node2",)
    again = Testnet.from_dict(yaml.safe_load(tn.to_json()))
    assert again.node("node2").impl == "rust" and again.node("node0").impl == "python"


def test_a_rust_node_serves_sync_by_default_like_a_python_one(tmp_path: Path) -> None:
    topo = load_topology(with_rust(tmp_path))
    assert topo.node("node2").serve_sync
    assert topo.node("node0").serve_sync
    assert not load_topology(with_rust(tmp_path, serve_sync=False)).node("node2").serve_sync


def test_rust_validators_and_sync_servers_are_allowed(tmp_path: Path) -> None:
    """Chain duties on the rust node: a validator, and a sentry that serves sync."""
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node4"].update(impl="rust")
    doc["nodes"]["node3"].update(impl="rust", serve_sync=True)
    topo = load_topology(write(tmp_path, doc))
    node4, node3 = topo.node("node4"), topo.node("node3")
    assert (node4.impl, node4.role, node4.serve_sync) == ("rust", "validator", True)
    assert (node3.impl, node3.serve_sync) == ("rust", True)
    tn = build_testnet(topo)
    assert set(tn.rust_nodes) == {"node3", "node4"}
    assert tn.node("node4").validator


@pytest.mark.parametrize(
    ("mutate", "field", "problem", "fix"),
    [
        (
            lambda d: d["nodes"]["node4"].update(impl="Rust"),
            "nodes.node4.impl",
            "'Rust' is not one of python, rust",
            "did you mean 'rust'?",
        ),
        (
            lambda d: d["nodes"]["node4"].update(impl="go"),
            "nodes.node4.impl",
            "'go' is not one of python, rust",
            "",
        ),
        (
            lambda d: d["nodes"]["node4"].update(imp="rust"),
            "nodes.node4.imp",
            "unknown key",
            "did you mean 'impl'?",
        ),
        (
            lambda d: d["nodes"]["node4"].update(impl="rust", serve_sync="yes"),
            "nodes.node4.serve_sync",
            "",
            "",
        ),
    ],
)
def test_impl_errors_name_node_field_and_fix(
    tmp_path: Path, mutate: Any, field: str, problem: str, fix: str
) -> None:
    err = error_for(tmp_path, mutate)
    assert err.field == field, str(err)
    assert problem in err.problem, str(err)
    assert fix in err.fix, str(err)


def test_a_rust_sentry_relays(tmp_path: Path) -> None:
    """A sentry's duties (relay both ways, here without serving sync) on the rust node."""
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node3"].update(impl="rust", serve_sync=False)
    node3 = load_topology(write(tmp_path, doc)).node("node3")
    assert (node3.impl, node3.relay_mode, node3.serve_sync) == ("rust", "both", False)


def test_only_the_rust_scenarios_run_rust() -> None:
    """The default testnets need no Rust toolchain; mixed-relay (both sentries on the rust
    node) and seed-rust (the four validators) are the ones that ask for it."""
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        rust = build_testnet(load_topology(path)).rust_nodes
        assert bool(rust) == (path.stem in ("mixed-relay", "seed-rust")), (path, rust)
