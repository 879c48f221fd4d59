"""Nested NAT (scenarios/cgnat.yaml): val-home behind its own router, whose outside is the
carrier's private network behind the carrier's router (the CGNAT). With plain sockets and
the RFC 5780 probe, no libp2p: the relay sees the carrier's public address, the two cone
routers in a row still map endpoint-independently and keep the port (every node behind
the carrier has its own ports), and a customer on the carrier's network reaches val-home
only as the public network does (router-home drops what it did not ask for)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import REPO, Testnets
from test_nat import serve_and_dial

from harness.infra import docker as docker_ops
from harness.run import natprobe
from harness.run.testnet import RunningTestnet

pytestmark = pytest.mark.docker

CGNAT = REPO / "scenarios" / "cgnat.yaml"
CGNAT_NETS = ("isp", "home", "b", "public", "control")


@pytest.fixture(scope="module")
def cgnat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    tn = Testnets(prefix=f"t{os.getpid() % 100000}", tmp=tmp_path_factory.mktemp("cgnat"))
    try:
        yield tn.up("cgnat", CGNAT, nets=CGNAT_NETS)
    finally:
        left = tn.cleanup()
        assert not left, f"objects left after down: {left}"


def test_the_relay_sees_the_carriers_address(cgnat: RunningTestnet) -> None:
    tn = cgnat.testnet
    relay_ip = tn.node("relay").addresses["public"]
    home, isp = tn.router("router-home"), tn.router("router-isp")
    assert home.public_network == "isp" and home.default_via == isp.private_ip
    served, dialed = serve_and_dial(
        tn.name,
        "relay",
        (relay_ip, 5201),
        "val-home",
        to=[relay_ip, 5201],
        deadline=10,
        attempt_timeout=10,
        retry=False,
        say="twice",
    )
    assert dialed["connected"] and dialed["reply"] == "pong:twice", dialed
    assert served["peer"][0] == isp.public_ip, served  # translated twice, not router-home's


def test_two_cones_in_a_row_still_map_endpoint_independently(cgnat: RunningTestnet) -> None:
    tn = cgnat.testnet
    rb = tn.router("router-b")
    relay = natprobe.Observer(
        docker_ops.node_container(tn.name, "relay"), tn.node("relay").addresses["public"]
    )
    router_b = natprobe.Observer(
        docker_ops.node_container(tn.name, rb.name), rb.public_ip, open_input=True
    )
    node = tn.node("val-home")
    assert node.port_range is not None
    got = natprobe.classify(
        docker_ops.node_container(tn.name, "val-home"),
        node.addresses["home"],
        relay,
        router_b,
        port=node.port_range[0] + 100,
    )
    assert got.preset == "port-restricted-cone", got.describe()
    assert got.port_preserving and got.mapped[0][0] == tn.router("router-isp").public_ip


def test_a_carrier_customer_cannot_dial_into_home(cgnat: RunningTestnet) -> None:
    tn = cgnat.testnet
    home_out = tn.router("router-home").public_ip  # its address on the carrier's network
    served, dialed = serve_and_dial(
        tn.name,
        "val-home",
        (tn.node("val-home").addresses["home"], 5202),
        "full-isp",
        to=[home_out, 5202],
        deadline=4,
        attempt_timeout=4,
        retry=False,
        say="in",
    )
    assert not dialed["connected"] and not served["accepted"], (served, dialed)
    assert dialed["errors"] == {"TimeoutError": 1}, dialed
