"""The node image, for real: built (or found) by the harness, then run alone in one
testcontainers container with no network at all (the image needs none)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from harness.infra import code_mount, images
from harness.progress import Progress

pytestmark = pytest.mark.docker

# testcontainers' Ryuk reaper (TESTCONTAINERS_RYUK_DISABLED) would pull its own image from a
# registry this machine may not reach: it stays off and the fixture removes its container.
testcontainers_config.ryuk_disabled = True

# Test containers are labelled like everything else the harness starts, so `sentrynet down`
# would find one left behind by a killed run.
LABELS = {"sentrynet.testnet": "image-test"}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of what goes into the image, so edits to node/ while the tests run (other
    work in the same checkout) cannot change the tag between two calls. Same content, same
    tag: after `make images` this finds the image just built. Shares the checkout's .cache
    (wheelhouse and build lock)."""
    repo = images.repo_root()
    root = tmp_path_factory.mktemp("tree")
    junk = shutil.ignore_patterns(*images.SKIP_DIRS, "*.pyc")
    shutil.copytree(repo / "node", root / "node", ignore=junk)
    shutil.copytree(repo / "templates", root / "templates", ignore=junk)
    shutil.copyfile(repo / images.NODE_LOCK, root / images.NODE_LOCK)
    (repo / ".cache").mkdir(exist_ok=True)
    (root / ".cache").symlink_to(repo / ".cache")
    return root


@pytest.fixture(scope="module")
def node_image(snapshot: Path) -> str:
    return images.ensure_node_image(Progress(), root=snapshot)


@pytest.fixture(scope="module")
def container(node_image: str) -> Iterator[DockerContainer]:
    """The node image idling (`sleep infinity`), commands exec'd into it; removed at the end.

    `network=None` is explicit so testcontainers does not attach the container to a network
    it guesses (it does so when no network is given); network_mode none then holds.
    """
    idle = DockerContainer(node_image, command=["sleep", "infinity"]).with_kwargs(
        labels=LABELS, network_mode="none", network=None
    )
    with idle:
        attrs = idle.get_wrapped_container().attrs
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["Config"]["Labels"]["sentrynet.testnet"] == LABELS["sentrynet.testnet"]
        yield idle


def run_in(container: DockerContainer, *cmd: str) -> str:
    code, out = container.exec(list(cmd))
    text = bytes(out).decode()
    assert code == 0, f"{' '.join(cmd)} exited {code}: {text}"
    return text


def test_node_image_imports_libp2p_and_node(container: DockerContainer) -> None:
    out = run_in(container, "python", "-c", "import libp2p, node; print('imports ok')")
    assert out.strip() == "imports ok"


def test_node_image_carries_the_node_bytecode(container: DockerContainer) -> None:
    """A container imports node/ from the image's .pyc files instead of compiling every
    module at its start (the cost of a 64-node testnet starting on two cores)."""
    script = (
        "import importlib.util, os, pathlib, node.app, node.chain.service;"
        "srcs = [m.__file__ for m in (node.app, node.chain.service)];"
        "print(all(os.path.exists(importlib.util.cache_from_source(s)) for s in srcs),"
        " sum(1 for _ in pathlib.Path('/app/node').rglob('*.py')),"
        " sum(1 for _ in pathlib.Path('/app/node').rglob('*.pyc')))"
    )
    # -B: this import writes nothing, so only what the image holds can be found
    present, sources, compiled = run_in(container, "python", "-B", "-c", script).split()
    assert present == "True", "node/ has no bytecode in the image"
    assert int(compiled) >= int(sources), (sources, compiled)


def test_node_image_has_router_tools_and_venv(container: DockerContainer) -> None:
    out = run_in(container, "sh", "-c", "command -v python; command -v iptables; ip -V")
    assert out.splitlines()[:2] == ["/opt/venv/bin/python", "/usr/sbin/iptables"]
    assert "iproute2" in out


def test_node_image_is_labelled_with_its_content_hash(node_image: str) -> None:
    labels = images.docker_client().images.get(node_image).labels
    assert labels[images.IMAGE_LABEL] == "node"
    assert node_image == images.node_tag(labels[images.HASH_LABEL])


def test_unchanged_tree_is_up_to_date(node_image: str, snapshot: Path) -> None:
    out = io.StringIO()
    assert images.ensure_node_image(Progress(stream=out), root=snapshot) == node_image
    assert f"{node_image} is up to date" in out.getvalue()
    assert "docker build" not in out.getvalue()
    assert images.node_image_tag(snapshot) == node_image


def test_changed_tree_gets_a_new_tag(node_image: str, snapshot: Path) -> None:
    extra = snapshot / "node" / "_tag_probe.py"
    extra.write_text("# a change to node/ must change the tag\n")
    try:
        assert images.node_image_tag(snapshot) != node_image
    finally:
        extra.unlink()
    assert images.node_image_tag(snapshot) == node_image


def test_bench_reads_the_same_cpu_and_memory_from_cgroups_as_docker_stats(
    container: DockerContainer,
) -> None:
    """bench/live.py reads a local container's CPU and memory from its cgroup files (a
    `docker stats` call takes the engine seconds on a loaded machine); the figures must be
    the ones the engine reports."""
    from bench.live import cgroup_stats

    run_in(container, "python3", "-c", "sum(i * i for i in range(2_000_000))")  # some CPU
    wrapped = container.get_wrapped_container()
    ours = cgroup_stats(wrapped.id)
    engine = wrapped.stats(stream=False, one_shot=True)
    assert ours is not None, "no cgroup files found for a container of this machine's engine"
    cpu_s = engine["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
    mem = engine["memory_stats"]
    assert cpu_s > 0.05
    assert abs(ours["cpu_s"] - cpu_s) < 0.01, (ours, cpu_s)  # idle between the two reads
    want = mem["usage"] - mem["stats"]["inactive_file"]
    assert abs(ours["mem_bytes"] - want) < 2**20, (ours, want)


def test_the_extracted_code_tree_is_the_images_own_and_a_node_starts_from_it(
    node_image: str, tmp_path: Path
) -> None:
    """harness/infra/code_mount.py: the tree holds the image's virtualenv, node code and
    standard library; a container of the image with the tree mounted over those paths
    imports the node from the mounts, byte for byte the image's files; a second `ensure`
    finds the tree instead of extracting again."""
    client = images.docker_client()
    out = io.StringIO()
    tree = code_mount.ensure(client, node_image, tmp_path / "code", Progress(stream=out))
    assert "extract the node code" in out.getvalue()
    assert [p for _, p in tree.mounts] == ["/opt/venv", "/app", "/usr/lib/python3.11"]
    again = io.StringIO()
    assert code_mount.ensure(client, node_image, tmp_path / "code", Progress(stream=again)) == tree
    assert again.getvalue() == ""

    script = (
        "import hashlib, os, node.app, libp2p, json;"
        "print([os.path.ismount(p) for p in ('/opt/venv', '/app', '/usr/lib/python3.11')]);"
        "print(node.app.__file__, libp2p.__file__, json.__file__);"
        "print(hashlib.sha256(open(node.app.__file__, 'rb').read()).hexdigest())"
    )
    with DockerContainer(node_image, command=["python", "-B", "-c", script]).with_kwargs(
        labels=LABELS, network_mode="none", network=None
    ) as plain:
        plain_out = _wait_output(plain)
    mounted = DockerContainer(node_image, command=["python", "-B", "-c", script]).with_kwargs(
        labels=LABELS, network_mode="none", network=None
    )
    for host, path in tree.mounts:
        mounted = mounted.with_volume_mapping(str(host), path, "ro")
    with mounted:
        mounted_out = _wait_output(mounted)
    mounts, files, digest = plain_out.splitlines()[-3:]
    assert mounts == "[False, False, False]"
    assert mounted_out.splitlines()[-3:] == ["[True, True, True]", files, digest]
    assert files.split() == [
        "/app/node/app.py",
        "/opt/venv/lib/python3.11/site-packages/libp2p/__init__.py",
        "/usr/lib/python3.11/json/__init__.py",
    ]


def _wait_output(c: DockerContainer) -> str:
    """The container's output once it exited 0."""
    wrapped = c.get_wrapped_container()
    result = wrapped.wait(timeout=60)
    text = wrapped.logs().decode()
    assert result["StatusCode"] == 0, text
    return text
