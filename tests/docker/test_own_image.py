"""Anyone's own node in the testnet: `image:` + `command:` with placeholders, `api: none`.

The image (testkit/own_image.py) holds one binary, the rust-libp2p reference node, and the
libraries it links, nothing else: no shell, no `ip`, no `cat`. The mini testnet runs it as
validator val-b behind cone router b. What is shown: render puts it in the network
namespace of a `val-b-net` container of our image, which set up its routes; it is ready,
audited and judged from outside (its TCP table, the routers' conntrack, the relay's
records); its proposals commit with val-a's; its links are cut in that namespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MINI, Testnets

from harness.checks import chain as chain_checks
from harness.checks import relay as relay_checks
from harness.infra.rust_image import RUST_BINARY
from harness.run import perturb
from harness.run.testnet import RunningTestnet
from testkit import own_image
from testkit.topology import with_node_fields

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
OWN = "val-b"


@pytest.fixture(scope="module")
def own_ref(rust_image: str) -> Iterator[str]:
    """The tool-less image of the rust node binary (built with the rust image)."""
    ref = own_image.build(REPO / RUST_BINARY)
    yield ref
    own_image.remove(ref)


@pytest.fixture(scope="module")
def mini_own(own_ref: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    tmp = tmp_path_factory.mktemp("mini-own")
    tn = Testnets(prefix=f"t{os.getpid() % 100000}", tmp=tmp)
    fields = {"image": own_ref, "command": ["/node", "--config", "{config}"]}
    try:
        yield tn.up("own", topology=with_node_fields(MINI, tmp, {OWN: fields}))
    finally:
        left = tn.cleanup()
        assert not left, f"objects left after down: {left}"


def test_own_image_runs_without_tools_in_our_network_namespace(
    mini_own: RunningTestnet, own_ref: str
) -> None:
    node = mini_own.testnet.node(OWN)
    assert node.image == own_ref and not node.has_api  # api: none is the default
    c = mini_own.container(OWN)
    assert own_ref in c.image.tags
    assert c.attrs["HostConfig"]["NetworkMode"].startswith("container:")
    res = c.exec_run(["/bin/sh", "-c", "true"])
    assert res.exit_code != 0  # no shell in it: the harness never needed one
    net = mini_own.container(f"{OWN}-net")
    assert net.labels["sentrynet.role"] == "netns"
    assert net.labels["sentrynet.netns-of"] == OWN
    routes = net.exec_run(["ip", "-4", "route", "show", "default"]).output.decode()
    assert node.default_via and node.default_via in routes


def test_own_image_node_is_judged_from_outside(mini_own: RunningTestnet) -> None:
    v = mini_own.wait_for(relay_checks.reservations, 120, "val-b reserves (relay records)")
    assert "val-b->relay [relay records; val-b has api: none]" in v.detail, v.detail
    v = mini_own.wait_for(relay_checks.dcutr_upgrade, 120, "val-a <-> val-b hole-punched")
    assert "[outside: router-a conntrack" in v.detail, v.detail
    v = mini_own.wait_for(chain_checks.consensus(3), 120, "blocks from both networks")
    assert "val-b: not readable" in v.detail and "b: val-b" in v.detail, v.detail
    print(v.detail)


def test_links_of_an_own_image_node_are_cut_in_its_namespace(mini_own: RunningTestnet) -> None:
    tn = mini_own.testnet
    said = perturb.disconnect(tn, OWN, "b")
    assert f"{tn.node(OWN).container}-net" in said, said
    assert "in " in perturb.reconnect(tn, OWN, "b")
