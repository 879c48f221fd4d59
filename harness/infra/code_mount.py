"""The node image's Python code as read-only bind mounts, where image layers are slow to read.

On an engine whose storage driver is fuse-overlayfs (Docker inside a container or a VM
without kernel overlay support, rootless Docker), every file a container reads from its
image goes through a userspace FUSE process. A Python node reads about two thousand files
to start: measured here, `import node.app` took 1.6-1.9 s (1.1-1.2 CPU-s in the process,
and more in the FUSE process) from the image's layers and 0.7-0.9 s (0.7-0.9 CPU-s) from
bind mounts of the same files, and at 32 nodes every API answered 49-51 s after compose up
against 38-39 s (docs/bench.md, 2026-12-08). With 64 nodes starting on two cores, that
reading is most of the start.

So on such an engine `up` extracts the image's virtualenv, the node code and the
interpreter's standard library once per image tag into `.cache/code/<tag>/` and renders
them as read-only bind mounts over the same paths in every Python node container. The
files are the image's own (the tag is a content hash of what it was built from), read
through the host's page cache, shared by every container. Other storage drivers (overlay2
reads through the kernel) and other engines (swarm: a task may run on a host without the
tree) get no mounts. `SENTRYNET_CODE_MOUNT=off` turns it off, `on` forces it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import SentrynetError
from harness.progress import Progress

# the image paths served from the tree: the node's virtualenv and code (node image
# Dockerfile) and the standard library of the interpreter the virtualenv names
VENV = "/opt/venv"
APP = "/app"
SLOW_DRIVERS = ("fuse-overlayfs",)
ENV = "SENTRYNET_CODE_MOUNT"
KEEP_TREES = 3  # trees of other tags kept, newest first (as images, a few back)
DONE = ".complete"  # written last: a tree without it is a half extraction


@dataclass(frozen=True)
class CodeTree:
    """An extracted tree and the image paths its parts are mounted over."""

    root: Path
    mounts: tuple[tuple[Path, str], ...]  # (host dir, container path)

    def volumes(self) -> list[str]:
        """Compose volume entries, read-only."""
        return [f"{host}:{path}:ro" for host, path in self.mounts]


def wanted(
    storage_driver: str, engine: str, setting: str | None = None, cache: Path | None = None
) -> bool:
    """Whether a testnet on this engine should run its Python nodes' code from a tree kept
    under `cache`: not where that path has a `:`, which a compose volume entry (host:
    container:ro) cannot carry."""
    setting = (setting if setting is not None else os.environ.get(ENV, "auto")).lower()
    if setting not in ("auto", "on", "off"):
        raise SentrynetError(f"{ENV}={setting!r}: use auto (the default), on or off")
    if setting == "off" or engine != "compose" or (cache is not None and ":" in str(cache)):
        return False
    return setting == "on" or storage_driver in SLOW_DRIVERS


def stdlib_path(pyvenv_cfg: str) -> str:
    """The standard library directory of the interpreter a pyvenv.cfg names (Debian's
    layout, as the node image has it): `version = 3.11.2` -> /usr/lib/python3.11."""
    m = re.search(r"^version\s*=\s*(\d+)\.(\d+)", pyvenv_cfg, re.MULTILINE)
    if m is None:
        raise SentrynetError(f"no interpreter version in the image's {VENV}/pyvenv.cfg")
    return f"/usr/lib/python{m[1]}.{m[2]}"


def tree_dir(cache: Path, image: str) -> Path:
    return cache / re.sub(r"[^A-Za-z0-9_.-]", "_", image)


def _mounts(root: Path, stdlib: str) -> tuple[tuple[Path, str], ...]:
    return ((root / "venv", VENV), (root / "app", APP), (root / "stdlib", stdlib))


def existing(cache: Path, image: str) -> CodeTree | None:
    """The complete tree of `image`, if extracted."""
    root = tree_dir(cache, image)
    done = root / DONE
    if not done.is_file():
        return None
    return CodeTree(root, _mounts(root, done.read_text().strip()))


def ensure(client: Any, image: str, cache: Path, progress: Progress) -> CodeTree:
    """The tree of `image`, extracted now if it is not there yet (a few seconds, once per
    tag); older trees pruned."""
    found = existing(cache, image)
    if found is not None:
        return found
    root = tree_dir(cache, image)
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with progress.step(f"extract the node code of {image} into {root}"):
        # labelled like a testnet's objects: `sentrynet down code-extract` finds one a
        # killed run left (it is only ever created, never started)
        container = client.containers.create(
            image, command=["true"], labels={"sentrynet.testnet": "code-extract"}
        )
        try:
            _extract(container, VENV, tmp / "venv")
            cfg = (tmp / "venv" / "pyvenv.cfg").read_text()
            stdlib = stdlib_path(cfg)
            _extract(container, APP, tmp / "app")
            _extract(container, stdlib, tmp / "stdlib")
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        (tmp / DONE).write_text(stdlib + "\n")
        try:
            tmp.rename(root)
        except OSError:
            # another run (a parallel test worker) extracted the same tag first: its tree
            # is complete and may be mounted already, so it stays and ours goes
            shutil.rmtree(tmp, ignore_errors=True)
            found = existing(cache, image)
            if found is None:
                raise SentrynetError(
                    f"{root} is there but incomplete (no {DONE}); remove it and start again"
                ) from None
            return found
    prune(cache, keep=root)
    return CodeTree(root, _mounts(root, stdlib))


def _extract(container: Any, path: str, dest: Path) -> None:
    """Copy `path` out of a created container into `dest` (its contents, not the dir)."""
    chunks, _ = container.get_archive(path)
    data = io.BytesIO(b"".join(chunks))
    dest.mkdir(parents=True, exist_ok=True)
    top = Path(path).name
    with tarfile.open(fileobj=data) as tar:
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if len(parts) < 2 or parts[0] != top:
                continue  # the directory itself is dest
            m.name = str(Path(*parts[1:]))
            members.append(m)
        # "tar": keeps the image's absolute symlinks (venv/bin/python -> /usr/bin/python3.11,
        # resolved inside the container) and refuses names that leave dest
        tar.extractall(dest, members=members, filter="tar")


def prune(cache: Path, keep: Path, now: float | None = None) -> list[Path]:
    """Remove trees other than `keep` beyond the KEEP_TREES newest, and half extractions
    older than an hour; the removed paths."""
    if not cache.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    trees = [p for p in cache.iterdir() if p.is_dir() and p != keep]
    half = [p for p in trees if not (p / DONE).exists() and now - p.stat().st_mtime > 3600]
    done = sorted(
        (p for p in trees if (p / DONE).exists()),
        key=lambda p: (p / DONE).stat().st_mtime,
        reverse=True,
    )
    for p in half + done[KEEP_TREES:]:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
