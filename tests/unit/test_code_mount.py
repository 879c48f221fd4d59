"""harness/infra/code_mount.py: when the Python nodes read the image's code from an extracted
tree, which paths it covers, what render makes of it, and which old trees go."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import yaml

from harness.errors import SentrynetError
from harness.infra import code_mount
from harness.infra.render import render
from harness.model.testnet import build_testnet
from harness.model.topology import load_topology
from harness.progress import Progress

REPO = Path(__file__).resolve().parents[2]


def test_only_a_fuse_engine_on_compose_wants_it_unless_told() -> None:
    assert code_mount.wanted("fuse-overlayfs", "compose", "auto")
    assert not code_mount.wanted("overlay2", "compose", "auto")
    assert not code_mount.wanted("fuse-overlayfs", "swarm", "auto")  # a task may run elsewhere
    assert not code_mount.wanted("fuse-overlayfs", "compose", "off")
    assert code_mount.wanted("overlay2", "compose", "on")
    assert code_mount.wanted("fuse-overlayfs", "compose", "auto", cache=Path("/w/.cache/code"))
    assert not code_mount.wanted("fuse-overlayfs", "compose", "on", cache=Path("/w:1/.cache"))
    with pytest.raises(SentrynetError, match="SENTRYNET_CODE_MOUNT='yes'"):
        code_mount.wanted("overlay2", "compose", "yes")


def test_the_stdlib_is_the_one_the_virtualenv_names() -> None:
    cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"
    assert code_mount.stdlib_path(cfg) == "/usr/lib/python3.11"
    with pytest.raises(SentrynetError, match="no interpreter version"):
        code_mount.stdlib_path("home = /usr/bin\n")


def test_render_mounts_the_tree_on_python_nodes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    root = tmp_path / "code" / "img"
    tree = code_mount.CodeTree(
        root,
        (
            (root / "venv", "/opt/venv"),
            (root / "app", "/app"),
            (root / "stdlib", "/usr/lib/python3.11"),
        ),
    )
    tn = build_testnet(load_topology("scenarios/seed-rust.yaml"))
    render(tn, tmp_path / "out", "sentrynet-node:test", rust_image="rust:test", code=tree)
    services = yaml.safe_load((tmp_path / "out" / "docker-compose.yml").read_text())["services"]
    for node in tn.nodes:
        volumes = services[node.name]["volumes"]
        mounted = [v for v in volumes if v.startswith(str(root))]
        if node.impl == "python":
            assert mounted == tree.volumes(), volumes
            assert all(v.endswith(":ro") for v in mounted)
        else:
            assert mounted == [], volumes
    for r in tn.routers:
        assert not any(str(root) in v for v in services[r.name].get("volumes", []))


def test_prune_keeps_the_newest_trees_and_drops_half_extractions(tmp_path: Path) -> None:
    cache = tmp_path / "code"
    now = 1_000_000.0
    for i in range(6):
        d = cache / f"t{i}"
        d.mkdir(parents=True)
        (d / code_mount.DONE).write_text("/usr/lib/python3.11\n")
        os.utime(d / code_mount.DONE, (now - 100 * i, now - 100 * i))
    half_old, half_new = cache / "t9.tmp1", cache / "t8.tmp2"
    for d, age in ((half_old, 7200), (half_new, 10)):
        d.mkdir()
        os.utime(d, (now - age, now - age))
    removed = code_mount.prune(cache, keep=cache / "t5", now=now)
    assert sorted(p.name for p in removed) == ["t3", "t4", "t9.tmp1"]
    assert sorted(p.name for p in cache.iterdir()) == ["t0", "t1", "t2", "t5", "t8.tmp2"]
    assert code_mount.existing(cache, "t0") is not None
    assert code_mount.existing(cache, "t8.tmp2") is None


class _Container:
    """A created container's archive of a path (what docker-py's get_archive returns)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, object]]:
        buf = io.BytesIO()
        top = Path(path).name
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in self.files.items():
                if name.startswith(path + "/"):
                    info = tarfile.TarInfo(f"{top}/{name[len(path) + 1 :]}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return [buf.getvalue()], {}

    def remove(self, force: bool = False) -> None:
        pass


def test_a_tree_another_run_extracted_meanwhile_is_kept(tmp_path: Path) -> None:
    """Two test workers extract the same tag at once: the first complete tree stays (its
    testnet may mount it already) and the second run uses it."""
    cache = tmp_path / "code"
    image = "sentrynet-node:abc"
    files = {
        "/opt/venv/pyvenv.cfg": b"version = 3.11.2\n",
        "/app/node/__init__.py": b"",
        "/usr/lib/python3.11/json/__init__.py": b"",
    }

    class Client:
        class containers:  # docker-py's attribute name
            @staticmethod
            def create(*_: object, **__: object) -> _Container:
                other = code_mount.tree_dir(cache, image)  # the other worker, first
                (other / "app" / "node").mkdir(parents=True)
                (other / "app" / "node" / "theirs.py").write_text("")
                (other / code_mount.DONE).write_text("/usr/lib/python3.11\n")
                return _Container(files)

    tree = code_mount.ensure(Client(), image, cache, Progress(stream=io.StringIO()))
    assert (tree.root / "app" / "node" / "theirs.py").exists()
    assert [p.name for p in cache.iterdir()] == [tree.root.name]  # our copy is gone
