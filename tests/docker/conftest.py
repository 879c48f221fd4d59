"""Fixtures for Docker tests: testnets with names and subnets no one else on the machine uses.

Other people (and other test runs) bring testnets up on the same machine at the same time,
so every testnet here gets a unique name (`t<pid>-...`) and subnets that no Docker network
uses yet, and is removed by its own label, never by a broad sweep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.infra import docker as docker_ops
from harness.infra.rust_image import RustToolchainMissing, ensure_rust_image
from harness.progress import Progress
from harness.run import cleanup, start
from harness.run.testnet import RunningTestnet
from testkit.topology import with_node_fields

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "scenarios" / "mini.yaml"
SENTRY = REPO / "scenarios" / "sentry.yaml"
RUST_NODE = "node6"  # the sentry testnet's full node behind router b
API_LESS_NODE = "node5"  # a validator behind router b, judged from outside (`api: none`)
MINI_NETS = ("public", "a", "b", "control")
# Generous: a loaded 2-CPU CI machine takes tens of seconds to import py-libp2p per node.
READY_DEADLINE_S = 240.0


def leftovers(name: str) -> list[str]:
    """Everything still labelled with testnet `name` (containers, networks, volumes)."""
    return (
        [f"container {c.name}" for c in docker_ops.containers(name)]
        + [f"network {n.name}" for n in docker_ops.networks(name)]
        + [f"volume {v.name}" for v in docker_ops.volumes(name)]
    )


@dataclass
class Testnets:
    """Hands out unique names and free subnets; removes every testnet it named at the end.
    `up` gives the harness's one handle of a running testnet (harness/run/testnet.py)."""

    __test__ = False

    prefix: str
    tmp: Path
    names: list[str] = field(default_factory=list)

    def name(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"[:31]
        self.names.append(name)
        return name

    def subnets(self, nets: tuple[str, ...] = MINI_NETS) -> dict[str, str]:
        seed = (os.getpid() * 7 + len(self.names) * 16) % 2048
        free = docker_ops.pick_free_subnets(len(nets), seed=seed)
        return dict(zip(nets, free, strict=True))

    def up(
        self,
        tag: str,
        topology: Path = MINI,
        nets: tuple[str, ...] = MINI_NETS,
        **kwargs: object,
    ) -> RunningTestnet:
        name = self.name(tag)
        return start.up(
            topology,
            name=name,
            subnets=self.subnets(nets),
            out=self.tmp / name,
            progress=Progress(),
            ready_deadline_s=READY_DEADLINE_S,
            **kwargs,  # type: ignore[arg-type]
        )

    @staticmethod
    def leftovers(name: str) -> list[str]:
        return leftovers(name)

    def cleanup(self) -> list[str]:
        """What is left after `down` of every testnet named here, with the errors `down`
        reported for it (why it is left)."""
        left = []
        for name in self.names:
            removed = cleanup.down(name)
            still = leftovers(name)
            left += still + ([f"(down said: {'; '.join(removed.errors)})"] if still else [])
        return left


@pytest.fixture
def testnets(tmp_path: Path) -> Iterator[Testnets]:
    tn = Testnets(prefix=f"t{os.getpid() % 100000}", tmp=tmp_path)
    try:
        yield tn
    finally:
        left = tn.cleanup()
        assert not left, f"objects left after down: {left}"


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTestnet]:
    """One mini testnet (relay + two validators behind cone routers) shared by a module."""
    tn = Testnets(prefix=f"t{os.getpid() % 100000}", tmp=tmp_path_factory.mktemp("mini"))
    try:
        yield tn.up("nat")
    finally:
        left = tn.cleanup()
        assert not left, f"objects left after down: {left}"


@pytest.fixture(scope="session")
def rust_image() -> str:
    """The rust node image of this tree (built when missing). Without cargo to build it the
    tests that need it skip locally with the reason, and FAIL with CI=true."""
    try:
        return ensure_rust_image(Progress())
    except RustToolchainMissing as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{exc} (CI=true: tests needing the rust node image may not skip)")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def sentry_foreign(
    rust_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTestnet]:
    """The sentry testnet with two nodes the harness may not ask: node6 (a full node behind
    NAT) on the rust reference node, and validator node5 with `api: none`, judged from the
    kernel's tables and the relays' records only. Shared by a module."""
    tmp = tmp_path_factory.mktemp("sentry-foreign")
    tn = Testnets(prefix=f"t{os.getpid() % 100000}", tmp=tmp)
    changes = {RUST_NODE: {"impl": "rust"}, API_LESS_NODE: {"api": "none"}}
    try:
        yield tn.up("foreign", topology=with_node_fields(SENTRY, tmp, changes))
    finally:
        left = tn.cleanup()
        assert not left, f"objects left after down: {left}"
