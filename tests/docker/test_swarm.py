"""The swarm engine's lifecycle on this Docker engine (harness/infra/swarm.py): a swarm
sentrynet initialises is bound to loopback and left again, with docker_gwbridge, once no
testnet uses it; a swarm sentrynet did not initialise is used and never left. The engine is
left as each test found it. The sentry scenario on the swarm engine, across two engines, is
tests/docker/test_multihost.py."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator

import docker.errors
import pytest

from harness.infra import docker as docker_ops
from harness.infra import swarm
from harness.progress import Progress
from harness.pytest_plugin import skip_unless_ci
from harness.wait import wait_until

pytestmark = pytest.mark.docker


def _networks() -> set[str]:
    return {n.name for n in docker_ops.client().networks.list()}


@pytest.fixture
def inactive() -> Iterator[set[str]]:
    """This test needs the engine out of swarm mode (as CI's is); the networks before it.
    Afterwards the engine is put back the same way whatever the test did."""
    if swarm.state().state != "inactive":
        skip_unless_ci(
            "the engine is in a swarm already (a user's): these tests would leave it",
            "its engine starts in no swarm",
        )
    before = _networks()
    yield before
    client = docker_ops.client()
    if swarm.state().state != "inactive":
        client.swarm.leave(force=True)
    if swarm.GWBRIDGE not in before:  # polled: the engine may still hold its endpoint
        swarm.remove_gwbridge()
    assert _networks() == before


def _overlay(name: str, testnet: str) -> docker.models.networks.Network:
    return docker_ops.client().networks.create(
        name,
        driver="overlay",
        attachable=True,
        internal=True,
        labels={docker_ops.LABEL_TESTNET: testnet},
    )


def test_a_swarm_sentrynet_initialises_is_on_loopback_and_left_as_found(
    inactive: set[str],
) -> None:
    now = swarm.ensure(Progress(), avoid=[])
    assert now.active and now.manager and now.owned, now
    info = docker_ops.client().info()["Swarm"]
    assert info["NodeAddr"] == "127.0.0.1", info  # nothing listens beyond the machine
    ingress = docker_ops.client().networks.get("ingress")
    carved = ipaddress.ip_network(ingress.attrs["IPAM"]["Config"][0]["Subnet"])
    assert any(carved.subnet_of(ipaddress.ip_network(p)) for p in swarm.POOLS), carved
    assert swarm.ensure(Progress(), avoid=[]) == now  # a second testnet joins it as it is
    # another testnet's overlay keeps it; the testnet going down does not count itself
    mine = _overlay(f"t{os.getpid()}-swarm-mine", f"t{os.getpid()}-mine")
    other = _overlay(f"t{os.getpid()}-swarm-other", f"t{os.getpid()}-other")
    try:
        assert swarm.release_if_unused(except_testnet=f"t{os.getpid()}-mine") is None
        assert swarm.state().active
        other.remove()
        said = swarm.release_if_unused(except_testnet=f"t{os.getpid()}-mine")
    finally:
        for net in (mine, other):
            with contextlib.suppress(docker.errors.APIError):  # gone with the swarm
                net.remove()
    assert said is not None and said.startswith("left the single-node swarm"), said
    assert swarm.state().state == "inactive"
    assert _networks() == inactive, "the engine's networks are as before"


def test_a_swarm_sentrynet_did_not_initialise_is_used_and_never_left(
    inactive: set[str],
) -> None:
    client = docker_ops.client()
    client.swarm.init(
        advertise_addr="127.0.0.1", listen_addr=swarm.LISTEN, default_addr_pool=[swarm.POOLS[-1]]
    )
    # as ensure() does: leaving before the ingress sandbox exists leaves a stale network
    wait_until(swarm._ingress_ready, what="ingress", deadline_s=30, likely_cause="see swarm.py")
    now = swarm.ensure(Progress(), avoid=[])
    assert now.active and now.manager and not now.owned, now
    assert swarm.release_if_unused() is None
    assert swarm.state().active, "a user's swarm is never left"


def test_a_worker_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlays are created on a manager: on a worker `ensure` says so (the state is faked:
    this machine has one engine, which cannot be a worker of itself)."""
    monkeypatch.setattr(
        swarm, "state", lambda: swarm.SwarmState("active", "n1", manager=False, owned=False)
    )
    with pytest.raises(Exception, match="as a worker: --engine swarm needs a manager"):
        swarm.ensure(Progress(), avoid=[])
