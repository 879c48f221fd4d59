"""`api: sentrynet | none` per node: validated like every other field, recorded in the
resolved testnet (testnet.json), and what tells the observer which nodes it may not ask."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from test_topology import BASE, error_for, write

from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology


def test_api_defaults_to_sentrynet_and_none_is_recorded(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node0"]["api"] = "none"
    topo = load_topology(write(tmp_path, doc))
    assert {n.name: n.api for n in topo.nodes}["node0"] == "none"
    assert {n.api for n in topo.nodes if n.name != "node0"} == {"sentrynet"}
    tn = build_testnet(topo)
    again = Testnet.from_dict(tn.to_dict())
    assert [n.name for n in again.nodes if not n.has_api] == ["node0"]


def test_unknown_api_value_names_the_field_and_the_choices(tmp_path: Path) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"]["api"] = "http"

    err = error_for(tmp_path, mutate)
    assert err.field == "nodes.node0.api"
    assert "sentrynet" in str(err) and "none" in str(err)
