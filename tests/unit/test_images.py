"""Image logic without Docker: base choice, content hash / tag, Dockerfile, apt mirror lookup.

The base choice takes "is this image present" and "can it be pulled" as functions; the tests
pass plain ones because that decision is exactly what is under test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import SentrynetError
from harness.infra import images
from harness.progress import Progress

REPO = Path(__file__).resolve().parents[2]


def present(*refs: str) -> Callable[[str], bool]:
    return lambda ref: ref in refs


class pullable:  # lower case: it stands in for a function
    """A can_pull function that records what it was asked."""

    def __init__(self, *refs: str) -> None:
        self.refs = refs
        self.calls: list[str] = []

    def __call__(self, ref: str) -> bool:
        self.calls.append(ref)
        return ref in self.refs


# --------------------------------------------------------------------------- base choice


def test_local_python_base_wins_and_nothing_is_pulled() -> None:
    pull = pullable(images.PYTHON_BASE)
    choice = images.choose_base(present(images.PYTHON_BASE, images.DEBOOTSTRAP_BASE), pull)
    assert choice == images.BaseChoice(images.PYTHON_BASE, "use")
    assert pull.calls == []


def test_local_debootstrap_base_is_used_before_trying_a_pull() -> None:
    pull = pullable(images.PYTHON_BASE)
    choice = images.choose_base(present(images.DEBOOTSTRAP_BASE), pull)
    assert choice == images.BaseChoice(images.DEBOOTSTRAP_BASE, "use")
    assert pull.calls == []


def test_python_base_is_pulled_when_nothing_is_local() -> None:
    choice = images.choose_base(present(), pullable(images.PYTHON_BASE))
    assert choice == images.BaseChoice(images.PYTHON_BASE, "pull")


def test_no_registry_and_nothing_local_builds_debootstrap_base() -> None:
    pull = pullable()
    choice = images.choose_base(present(), pull)
    assert choice == images.BaseChoice(images.DEBOOTSTRAP_BASE, "build")
    assert choice.is_debootstrap
    assert pull.calls == [images.PYTHON_BASE]


def test_mode_debootstrap_ignores_python_image_and_never_pulls() -> None:
    pull = pullable(images.PYTHON_BASE)
    choice = images.choose_base(present(images.PYTHON_BASE), pull, "debootstrap")
    assert choice == images.BaseChoice(images.DEBOOTSTRAP_BASE, "build")
    assert pull.calls == []


def test_mode_python_without_image_or_registry_is_a_clear_error() -> None:
    with pytest.raises(SentrynetError, match="cannot be pulled"):
        images.choose_base(present(images.DEBOOTSTRAP_BASE), pullable(), "python")


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(SentrynetError, match="auto, python, debootstrap"):
        images.choose_base(present(), pullable(), "alpine")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- content hash


FILES = [("node/__init__.py", b"x = 1\n"), ("node/app.py", b"def run(): ...\n")]


def digest(**over: object) -> str:
    args: dict[str, object] = {
        "files": FILES,
        "lock": b"libp2p==0.8.1\n",
        "dockerfile": "FROM base\n",
        "base_id": "sha256:aaa",
    }
    args.update(over)
    return images.content_hash(**args)  # type: ignore[arg-type]


def test_hash_is_stable_short_hex_and_order_independent() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", digest())
    assert digest() == digest()
    assert digest(files=list(reversed(FILES))) == digest()


@pytest.mark.parametrize(
    "change",
    [
        {"files": [FILES[0], ("node/app.py", b"def run(): return 1\n")]},  # content
        {"files": [FILES[0], ("node/app2.py", FILES[1][1])]},  # rename
        {"files": FILES[:1]},  # deletion
        {"files": [*FILES, ("node/new.py", b"")]},  # new empty file
        {"lock": b"libp2p==0.8.2\n"},
        {"dockerfile": "FROM base\nRUN true\n"},
        {"base_id": "sha256:bbb"},
    ],
)
def test_any_input_change_changes_the_hash(change: dict[str, object]) -> None:
    assert digest(**change) != digest()


def test_bytes_cannot_move_between_parts_unnoticed() -> None:
    a = digest(files=[("node/a", b"bc")])
    b = digest(files=[("node/ab", b"c")])
    assert a != b


def test_tag_format() -> None:
    assert images.node_tag("0123456789ab") == "sentrynet-node:0123456789ab"


PYPROJECT = """[project]
name = "sentrynet"
dependencies = ["libp2p==0.8.1", "trio", "docker>=7"]

[project.optional-dependencies]
dev = ["pytest>=8"]
"""


def fake_repo(tmp_path: Path) -> Path:
    """A minimal checkout: templates/, pyproject.toml, both locks and a node/ package."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "constraints.txt").write_text("docker==7.2.0\nlibp2p==0.8.1\npytest==9.0.0\n")
    (tmp_path / images.NODE_LOCK).write_text("libp2p==0.8.1\ntrio==0.35.0\n")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "__init__.py").write_text("")
    (tmp_path / "node" / "app.py").write_text("X = 1\n")
    return tmp_path


def test_plan_tag_unchanged_tree_same_tag_changed_tree_new_tag(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    tag1 = images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag
    assert images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag == tag1

    (root / "node" / "__pycache__").mkdir()
    (root / "node" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    assert images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag == tag1

    (root / "node" / "app.py").write_text("X = 2\n")
    tag2 = images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag
    assert tag2 != tag1

    (root / images.NODE_LOCK).write_text("libp2p==0.8.1\ntrio==0.36.0\n")
    tag3 = images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag
    assert tag3 != tag2
    assert images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:2").tag != tag3
    assert images.plan_node_image(root, images.PYTHON_BASE, "sha256:1").tag != tag3


def test_node_files_lists_nested_files_and_skips_caches(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    (root / "node" / "relay").mkdir()
    (root / "node" / "relay" / "hop.py").write_text("")
    (root / "node" / "relay" / "__pycache__").mkdir()
    (root / "node" / "relay" / "__pycache__" / "hop.pyc").write_text("")
    paths = [p for p, _ in images.node_files(root)]
    assert paths == ["node/__init__.py", "node/app.py", "node/relay/hop.py"]


def test_dev_extra_and_host_lock_never_change_the_tag(tmp_path: Path) -> None:
    """A new test or bench dependency changes pyproject.toml and constraints.txt (the host
    venv's lock), not the node's lock: the image is not rebuilt for it."""
    root = fake_repo(tmp_path)
    tag = images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('["pytest>=8"]', '["pytest>=8", "hypothesis"]')
    )
    with (root / "constraints.txt").open("a") as fh:
        fh.write("hypothesis==6.100.0\nsortedcontainers==2.4.0\n")
    assert images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1").tag == tag


def test_missing_node_lock_is_a_clear_error(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    (root / images.NODE_LOCK).unlink()
    with pytest.raises(SentrynetError, match=r"constraints-node\.txt.*make lock"):
        images.plan_node_image(root, images.DEBOOTSTRAP_BASE, "sha256:1")


def pins(path: Path) -> dict[str, str]:
    """name -> version of a pip freeze file, names normalised as pip compares them."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_node_lock_is_the_node_closure_pinned_as_in_the_host_lock() -> None:
    """constraints-node.txt is generated from constraints.txt (make lock): same versions, the
    node's requirements in it, and none of the harness's, test or bench dependencies."""
    node, host = pins(REPO / images.NODE_LOCK), pins(REPO / "constraints.txt")
    assert {n: host.get(n) for n in node} == node
    assert set(images.NODE_REQUIREMENTS) <= set(node)
    for host_only in ("docker", "pyyaml", "jinja2", "pytest", "testcontainers", "matplotlib"):
        assert host_only in host
        assert host_only not in node


def test_makefile_locks_the_same_node_requirements() -> None:
    found = re.search(r"^NODE_REQUIREMENTS := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert found is not None
    assert tuple(found.group(1).split()) == images.NODE_REQUIREMENTS


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_for_debootstrap_base_needs_no_network() -> None:
    text = images.render_dockerfile(REPO, images.DEBOOTSTRAP_BASE)
    assert text.splitlines()[4] == f"FROM {images.DEBOOTSTRAP_BASE}"
    assert "apt-get" not in text
    assert "pip install --no-index" in text
    assert f"-c /tmp/wheelhouse/{images.NODE_LOCK}" in text
    assert "libp2p trio prometheus-client" in text
    assert 'CMD ["python", "-m", "node", "--config", "/config/node.toml"]' in text
    assert "sentrynet.image=node" in text


def test_dockerfile_for_python_base_installs_router_tools() -> None:
    text = images.render_dockerfile(REPO, images.PYTHON_BASE)
    assert f"FROM {images.PYTHON_BASE}" in text
    assert "apt-get install -y --no-install-recommends iproute2 iptables nftables procps" in text
    # no harness-only dependency goes into the node image
    for harness_only in ("docker", "pyyaml", "jinja2"):
        assert harness_only not in images.NODE_REQUIREMENTS


def test_wheelhouse_key_follows_the_lock() -> None:
    assert images.wheelhouse_key(b"a==1\n") == images.wheelhouse_key(b"a==1\n")
    assert images.wheelhouse_key(b"a==1\n") != images.wheelhouse_key(b"a==2\n")


# --------------------------------------------------------------------------- apt mirror


def test_mirror_from_deb822_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTRYNET_DEBIAN_MIRROR", raising=False)
    src = tmp_path / "debian.sources"
    src.write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert images.debian_mirror([src]) == "http://mirror.example/debian"


def test_mirror_from_one_line_list_skips_deb_src_and_other_suites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SENTRYNET_DEBIAN_MIRROR", raising=False)
    src = tmp_path / "sources.list"
    src.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://other.example/apt cloud-sdk-bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert images.debian_mirror([src]) == "http://mirror.example/debian"


def test_disabled_deb822_stanza_and_missing_files_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SENTRYNET_DEBIAN_MIRROR", raising=False)
    src = tmp_path / "x.sources"
    src.write_text("Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n")
    assert images.debian_mirror([tmp_path / "absent.list", src]) is None


def test_mirror_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRYNET_DEBIAN_MIRROR", "http://override.example/debian")
    assert images.debian_mirror([]) == "http://override.example/debian"


# --------------------------------------------------------------------------- host python, prune


def test_host_python_must_match_the_image() -> None:
    images.check_host_python((3, 11))
    with pytest.raises(SentrynetError, match=r"Python 3\.12.*python3\.11"):
        images.check_host_python((3, 12))


def test_created_epoch_reads_docker_timestamps() -> None:
    assert images.created_epoch("1970-01-01T00:01:40.123456789Z") == 100.0
    assert images.created_epoch("") is None


def test_prune_keeps_current_newest_recent_and_unknown() -> None:
    hour = images.KEEP_YOUNGER_S
    now = 100 * hour
    old = [([f"sentrynet-node:old{i}"], float(now - 2 * hour - i)) for i in range(8)]
    pairs = [
        (["sentrynet-node:current"], float(now - 50 * hour)),  # the one just built/kept
        (["sentrynet-node:recent"], float(now - 60)),
        (["sentrynet-node:unknown"], None),
        *old,
    ]
    doomed = images.prune_candidates(pairs, "sentrynet-node:current", now)
    # kept besides current: the newest five others (unknown age counts as newest), i.e.
    # unknown, recent, old0..old2; everything older goes
    assert doomed == [f"sentrynet-node:old{i}" for i in range(3, 8)]


def test_prune_never_touches_other_repositories() -> None:
    pairs: list[tuple[list[str], float | None]] = [
        (["sentrynet-node:x", "mine:too"], 0.0) for _ in range(images.KEEP_OLD_IMAGES + 1)
    ]
    assert images.prune_candidates(pairs, "sentrynet-node:current", 10.0**9) == ["sentrynet-node:x"]


def test_debootstrap_base_without_root_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images.os, "geteuid", lambda: 1000)
    with pytest.raises(SentrynetError, match=r"needs root.*sudo"):
        images.build_debootstrap_base(tmp_path, Progress(quiet=True))
