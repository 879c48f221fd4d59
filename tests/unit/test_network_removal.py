"""Which refusals of a network's removal `down` waits out (harness/infra/docker.py).

The engine refuses to remove a network while it still counts something on it: a swarm
task on another host, or the endpoint of a container it has just force-removed. Both go
by themselves within seconds, so `down` retries them (bounded); anything else is an error
at once. The messages are the engine's own (engine 20.10, as the Docker SDK raises them).
"""

from __future__ import annotations

import docker.errors
import pytest
import requests

from harness.infra.docker import _still_attached_elsewhere


def refusal(message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = 403
    return docker.errors.APIError("403 Client Error", response=response, explanation=message)


@pytest.mark.parametrize(
    "message",
    [
        "error while removing network: network t1-foreign_control id 3f2a has active endpoints",
        "rpc error: code = FailedPrecondition desc = network 9xk is in use by task 1ab",
    ],
)
def test_a_network_the_engine_still_counts_something_on_is_waited_for(message: str) -> None:
    assert _still_attached_elsewhere(refusal(message))


def test_other_refusals_are_errors_at_once() -> None:
    assert not _still_attached_elsewhere(refusal("network t1_a not found"))
    assert not _still_attached_elsewhere(RuntimeError("has active endpoints"))
