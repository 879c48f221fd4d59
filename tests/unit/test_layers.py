"""The harness's import direction: no module imports a layer above its own.

foundations <- model <- infra <- client <- checks <- run <- scenarios <- cli / pytest_plugin
(harness/__init__.py). Read from the source with ast, so a late import inside a function
counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"

LAYERS = (
    ("foundations", ("harness", "harness.errors", "harness.progress", "harness.wait")),
    ("model", ("harness.model",)),
    ("infra", ("harness.infra",)),
    ("client", ("harness.client",)),
    ("checks", ("harness.checks",)),
    ("run", ("harness.run",)),
    ("scenarios", ("harness.scenarios",)),
    ("entry points", ("harness.cli", "harness.pytest_plugin")),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix naming `module`."""
    best, best_len = -1, -1
    for i, (_name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best >= 0, f"{module} is in no layer; add it to LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def harness_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a harness module in the file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("harness")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harness":  # from harness import run -> harness.run
                found += [(node.lineno, f"harness.{a.name}") for a in node.names]
            elif node.module.startswith("harness."):
                found.append((node.lineno, node.module))
    return found


def test_no_harness_module_imports_upward() -> None:
    upward = []
    files = sorted(HARNESS.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        me = module_name(path)
        mine = layer_of(me)
        for line, target in harness_imports(path):
            if layer_of(target) > mine:
                upward.append(
                    f"{path.relative_to(HARNESS.parent)}:{line}: {me} ({LAYERS[mine][0]}) "
                    f"imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from harness.run import runner\n")
    assert harness_imports(bad) == [(2, "harness.run")]
    assert layer_of("harness.run.runner") > layer_of("harness.model.testnet")
    assert layer_of("harness.client") == 3 and layer_of("harness") == 0
