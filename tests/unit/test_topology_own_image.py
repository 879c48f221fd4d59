"""Anyone's own node: `image:` + `command:` validated with field-named errors, recorded in
testnet.json, and rendered: a `<name>-net` service of our image owning the network
namespace, the user's image joining it, the command's placeholders filled in."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from test_topology import BASE, error_for, write

from harness.infra.render import own_command, render
from harness.model.testnet import Testnet, build_testnet
from harness.model.topology import load_topology

OWN = {
    "image": "myorg/node:1.2",
    "command": ["node", "--listen", "{listen}", "--relays={relay_servers}"],
}


def with_own(tmp_path: Path, **fields: Any) -> Path:
    doc = copy.deepcopy(BASE)
    doc["nodes"]["node0"].update({**OWN, **fields})
    return write(tmp_path, doc)


def test_own_image_node_is_recorded_with_api_none_by_default(tmp_path: Path) -> None:
    topo = load_topology(with_own(tmp_path))
    node = topo.node("node0")
    assert (node.image, node.impl, node.api) == ("myorg/node:1.2", "image", "none")
    tn = Testnet.from_dict(build_testnet(topo).to_dict())
    n0 = tn.node("node0")
    assert n0.image == "myorg/node:1.2" and n0.command == tuple(OWN["command"])
    assert n0.netns_container == f"{n0.container}-net"
    assert tn.node("node3").netns_container == tn.node("node3").container


def test_placeholders_are_filled_with_what_render_decided(tmp_path: Path) -> None:
    tn = build_testnet(load_topology(with_own(tmp_path)))
    n0 = tn.node("node0")
    argv = own_command(tn, n0)
    assert argv == [
        "node",
        "--listen",
        n0.listen_addrs[0],
        "--relays=" + ",".join(n0.relay_server_addrs),
    ]
    assert own_command(tn, tn.node("node3")) is None


def test_render_puts_the_own_image_in_our_network_namespace(tmp_path: Path) -> None:
    tn = build_testnet(load_topology(with_own(tmp_path)))
    render(tn, tmp_path / "out", "sentrynet-node:test")
    services = yaml.safe_load((tmp_path / "out" / "docker-compose.yml").read_text())["services"]
    node, net = services["node0"], services["node0-net"]
    assert node["image"] == "myorg/node:1.2"
    assert node["network_mode"] == "service:node0-net"
    assert node["command"] == own_command(tn, tn.node("node0"))
    assert (
        "networks" not in node and node["depends_on"]["node0-net"]["condition"] == "service_healthy"
    )
    assert node["labels"]["sentrynet.api"] == "none"
    assert net["image"] == "sentrynet-node:test"
    assert "/config/netsetup.sh" in " ".join(net["command"])
    assert net["labels"]["sentrynet.role"] == "netns"
    assert set(net["networks"]) == {*tn.node("node0").addresses, tn.control.name}


def test_unknown_placeholder_names_the_argument_and_the_known_ones(tmp_path: Path) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"].update({"image": "x:1", "command": ["node", "{relays}"]})

    err = error_for(tmp_path, mutate)
    assert err.field == "nodes.node0.command[1]"
    assert "unknown placeholder {relays}" in str(err) and "{relay_servers}" in str(err)


def test_command_without_image_and_impl_with_image_are_refused(tmp_path: Path) -> None:
    def no_image(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"]["command"] = ["node"]

    assert error_for(tmp_path, no_image).field == "nodes.node0.command"

    def both(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"].update({"image": "x:1", "impl": "rust"})

    assert error_for(tmp_path, both).field == "nodes.node0.impl"

    def bad_image(doc: dict[str, Any]) -> None:
        doc["nodes"]["node0"]["image"] = "my image"

    assert error_for(tmp_path, bad_image).field == "nodes.node0.image"
