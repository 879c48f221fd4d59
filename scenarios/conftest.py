"""Scenario tests: the sentrynet pytest plugin (harness/pytest_plugin.py).

It is registered through the `pytest11` entry point in pyproject.toml; a venv installed
before that line existed does not have it yet, so register it here when it is missing.
Every test here is marked `docker` and `scenario` (tests/conftest.py orders them last and
makes them fail, not skip, without Docker when CI=true).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("sentrynet") or pm.has_plugin("harness.pytest_plugin")):
        pm.import_plugin("harness.pytest_plugin")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "scenarios" in item.path.parts and item.path.name.startswith("test_"):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.scenario)
