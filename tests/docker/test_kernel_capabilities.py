"""`sentrynet capabilities` on this machine: every condition the topology format offers can be
applied here, each by a mechanism probed for real in a throwaway container that is gone
afterwards. On this project's CI kernel latency comes from the NFQUEUE delayer (no netem)."""

from __future__ import annotations

import pytest

from harness.infra import docker as docker_ops
from harness.infra.images import ensure_node_image
from harness.progress import Progress
from harness.run import capabilities

pytestmark = pytest.mark.docker


def test_every_offered_condition_applies_here_and_the_probe_leaves_nothing() -> None:
    conds = capabilities.probe(ensure_node_image(Progress(quiet=True)))
    by_name = {c.name.split(" (")[0]: c for c in conds}
    assert capabilities.missing(conds) == [], capabilities.render(conds)
    latency = dict((how, ok) for how, ok, _ in by_name["latency, jitter"].mechanisms)
    assert by_name["rate"].available, capabilities.render(conds)
    assert latency["tc netem"] or latency["NFQUEUE delayer"], capabilities.render(conds)
    assert by_name["mapping_timeout_s"].available and by_name["cone filtering"].available
    left = docker_ops.client().containers.list(
        all=True, filters={"label": f"sentrynet.testnet={capabilities.CHECK_TESTNET}"}
    )
    assert not left, [c.name for c in left]
