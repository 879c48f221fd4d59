"""Shared pytest configuration.

Docker tests are marked `docker`. When the daemon does not answer they skip locally (with the
reason shown by -ra), but with CI=true they FAIL: a CI run without Docker is a broken CI run,
not a green one.
"""

from __future__ import annotations

import os

import pytest


def docker_available() -> str | None:
    """None when a Docker daemon answers, else the reason it does not."""
    from harness.errors import SentrynetError
    from harness.infra.images import docker_client

    try:
        docker_client(timeout=10)
    except SentrynetError as exc:
        return str(exc)
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def _docker_ready() -> None:
    reason = docker_available()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: Docker tests must run, they may not skip)")
    pytest.skip(reason)


# Run order within one pytest run: cheap and local first, so a broken unit fails in seconds
# instead of after the scenarios. Unmarked tests rank 0.
RANK = {"loopback": 1, "netns": 1, "interop": 1, "docker": 2, "scenario": 3}


def rank(item: pytest.Item) -> int:
    return max((RANK.get(m.name, 0) for m in item.iter_markers()), default=0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=rank)  # stable: file order is kept within a rank
    for item in items:
        needs_docker = item.get_closest_marker("docker") or item.get_closest_marker("scenario")
        if needs_docker and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, "_docker_ready")
