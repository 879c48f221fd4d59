"""What `down` says when the engine will not remove a testnet's network
(harness/infra/docker.py network_refusal).

A network with no container attached that the engine still refuses with "has active
endpoints" is the engine's stale endpoint count (engine 20.10, seen in CI): nothing sentrynet
can wait out, so the error says what clears it. Any other refusal is passed on as it is. The
messages are the engine's own, as the Docker SDK raises them.
"""

from __future__ import annotations

from types import SimpleNamespace

import docker.errors
import requests

from harness.infra.docker import network_refusal

STALE = "error while removing network: network t1-foreign_control id 3f2a has active endpoints"


def refusal(message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = 403
    return docker.errors.APIError("403 Client Error", response=response, explanation=message)


def network(containers: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(attrs={"Name": "t1-foreign_control", "Containers": containers})


def test_a_stale_endpoint_count_says_what_clears_it() -> None:
    said = network_refusal(network({}), refusal(STALE))
    assert said.startswith(STALE)
    assert "stale endpoint count" in said and "restart" in said


def test_a_network_with_a_container_attached_is_reported_as_the_engine_said() -> None:
    assert network_refusal(network({"abc": {"Name": "x"}}), refusal(STALE)) == STALE
    assert network_refusal(network({}), refusal("network t1_a not found")) == (
        "network t1_a not found"
    )
