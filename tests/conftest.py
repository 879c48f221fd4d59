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
    try:
        import docker  # noqa: PLC0415

        docker.from_env(timeout=10).ping()
    except Exception as exc:
        return f"Docker daemon not reachable: {exc}"
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("docker") or item.get_closest_marker("scenario"):
            item.fixturenames.insert(0, "_docker_ready")
