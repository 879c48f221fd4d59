"""The scenarios: files under scenarios/library/ (one per scenario, harness/scenarios/loader.py
reads them), and the named step kinds they use (harness/scenarios/actions.py).

    SCENARIOS   name -> scenario file, for every file in scenarios/library/
    get(x, impl)  the Scenario of a name or of a scenario file's path (validated), its
                topology's unpinned nodes on `impl` (python, the default: as written; rust)
    listing()   (name, description, file, impls) of every scenario, for `scenario list`

A scenario is data: which topology, which checks in which order, which perturbations and
actions in between. Nothing in code names a node; files select nodes by role, network and
implementation against their topology (docs/scenarios.md).
"""

from __future__ import annotations

from pathlib import Path

from harness.run.steps import Scenario
from harness.scenarios.actions import STORE_FILES, analyse_reach, wipe_store
from harness.scenarios.loader import (
    DEFAULT_IMPL,
    IMPL_VARIANTS,
    LIBRARY_DIR,
    ScenarioError,
    find,
    load_scenario,
    scenario_files,
)

__all__ = [
    "DEFAULT_IMPL",
    "IMPL_VARIANTS",
    "LIBRARY_DIR",
    "SCENARIOS",
    "STORE_FILES",
    "ScenarioError",
    "analyse_reach",
    "get",
    "listing",
    "load_scenario",
    "wipe_store",
]

SCENARIOS: dict[str, Path] = {f.name.removesuffix(".yaml"): f for f in scenario_files()}


def get(name_or_file: str, impl: str = DEFAULT_IMPL, impl_field: str = "--impl") -> Scenario:
    """The scenario of a name (scenarios/library/<name>.yaml) or of a file's path, its
    topology's unpinned nodes on `impl` (one of IMPL_VARIANTS)."""
    return load_scenario(find(name_or_file), impl=impl, impl_field=impl_field)


def listing() -> list[tuple[str, str, Path, tuple[str, ...]]]:
    """(name, description, file, impls) per shipped scenario; a file that does not load
    says so in its description instead of hiding the others."""
    out = []
    for name, path in SCENARIOS.items():
        impls: tuple[str, ...] = ()
        try:
            sc = load_scenario(path)
            desc, impls = sc.description, sc.impls
        except ScenarioError as exc:
            desc = f"INVALID: {exc}"
        out.append((name, desc, path, impls))
    return out
