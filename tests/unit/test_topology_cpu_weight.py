"""`cpu_weight:` per node: a relative CPU share when the machine has too little, validated
like every other field, kept in testnet.json and rendered as the container's cpu_shares."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_topology import BASE, error_for, write

from harness.infra.render import render
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology


def test_weight_defaults_to_one_and_is_kept_and_rendered_as_cpu_shares(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node0"]["cpu_weight"] = 4
    topo = load_topology(write(tmp_path, doc))
    assert topo.node("node0").cpu_weight == 4
    assert {n.cpu_weight for n in topo.nodes if n.name != "node0"} == {1}
    tn = build_testnet(topo)
    assert Testnet.from_dict(tn.to_dict()).node("node0").cpu_weight == 4
    render(tn, tmp_path / "out", "sentrynet-node:test")
    services = yaml.safe_load((tmp_path / "out" / "docker-compose.yml").read_text())["services"]
    assert services["node0"]["cpu_shares"] == 4096
    # weight 1 is Docker's own default (1024): not written, so every other file is unchanged
    assert all("cpu_shares" not in s for name, s in services.items() if name != "node0")


@pytest.mark.parametrize("bad", [0, 65, 2.5, "4", True, None])
def test_a_bad_weight_names_the_field_and_the_range(tmp_path: Path, bad: Any) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"]["cpu_weight"] = bad

    err = error_for(tmp_path, mutate)
    assert err.field == "nodes.node0.cpu_weight"
    assert "from 1 to 64" in str(err) and "relay" in str(err)
