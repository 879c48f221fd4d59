"""The image stage: base image, host-built wheelhouse, node image tagged by content hash.

Why it looks like this (docs/design.md "No registry: images are built here"): a machine may
have no registry, so the base image is `python:3.11-slim-bookworm` where it is present or
can be pulled and otherwise a Debian bookworm rootfs made with debootstrap and `docker
import`ed. Containers cannot reach the package index, so the node's Python dependencies are
built into a wheelhouse on the host and installed offline in the image. The tag is a hash of
everything that goes into the image, so an unchanged tree never rebuilds and a changed one
always does.

Entry points for the rest of the harness:
- `node_image_tag(repo_root)`: the tag the current tree builds to; cheap, never builds.
- `ensure_node_image(progress)`: build whatever is missing and return that tag.
The rust node image (harness/infra/rust_image.py) reuses the base choice, the hashing and
the build helpers here.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

from harness.errors import SentrynetError
from harness.progress import Progress

NODE_REPO = "sentrynet-node"
PYTHON_BASE = "python:3.11-slim-bookworm"
# The tag names what the base holds, so a base made before a package was added is not used
DEBOOTSTRAP_BASE = "sentrynet-base:bookworm-nft"
IMAGE_LABEL = "sentrynet.image"  # node | base | rust-node
HASH_LABEL = "sentrynet.content-hash"
HASH_LEN = 12

# The node's runtime closure (NOT the harness's docker/pyyaml/jinja2). Versions come from
# NODE_LOCK, which `make lock` generates as exactly the closure of these (the Makefile's
# NODE_REQUIREMENTS names the same three). Of the two locks only this one goes into the
# wheelhouse and the tag: harness, test and bench dependencies (constraints.txt, the host
# venv's lock) never rebuild the image.
NODE_REQUIREMENTS: tuple[str, ...] = ("libp2p", "trio", "prometheus-client")
NODE_LOCK = "constraints-node.txt"

# Router tools the node image needs (nftables: the cone filters, harness/infra/natrules.py);
# the debootstrap base already includes them.
SYSTEM_PACKAGES: tuple[str, ...] = ("iproute2", "iptables", "nftables", "procps")
DEBOOTSTRAP_INCLUDE = "python3,python3-venv,iproute2,iptables,nftables,ca-certificates,procps"
DEBIAN_SUITE = "bookworm"
IMAGE_PYTHON = (3, 11)  # bookworm's python3 and python:3.11-slim-bookworm

# Pruning keeps this many older node images, and never one younger than KEEP_YOUNGER_S
# (another checkout on the same machine may be about to start a testnet with it).
KEEP_OLD_IMAGES = 5
KEEP_YOUNGER_S = 3600

SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")

BaseMode = Literal["auto", "python", "debootstrap"]
BASE_MODES: tuple[BaseMode, ...] = ("auto", "python", "debootstrap")


def repo_root() -> Path:
    """The checkout this harness runs from (templates/, node/ and constraints.txt live here)."""
    return Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- base choice


@dataclass(frozen=True)
class BaseChoice:
    """Which base image to use and what it takes to have it."""

    ref: str
    action: Literal["use", "pull", "build"]

    @property
    def is_debootstrap(self) -> bool:
        return self.ref == DEBOOTSTRAP_BASE


def choose_base(
    is_present: Callable[[str], bool],
    can_pull: Callable[[str], bool],
    mode: BaseMode = "auto",
) -> BaseChoice:
    """Pick the base image.

    auto: a local python:3.11-slim-bookworm, else a local debootstrap base, else pull the
    python image, else build the debootstrap base. Local images win over pulls so a warm
    machine never touches the network and its tag stays stable.
    """
    if mode not in BASE_MODES:
        raise SentrynetError(f"--base: {mode!r} is not one of {', '.join(BASE_MODES)}")
    if mode in ("auto", "python") and is_present(PYTHON_BASE):
        return BaseChoice(PYTHON_BASE, "use")
    if mode in ("auto", "debootstrap") and is_present(DEBOOTSTRAP_BASE):
        return BaseChoice(DEBOOTSTRAP_BASE, "use")
    if mode in ("auto", "python") and can_pull(PYTHON_BASE):
        return BaseChoice(PYTHON_BASE, "pull")
    if mode == "python":
        raise SentrynetError(
            f"--base python: {PYTHON_BASE} is not present and cannot be pulled; "
            "use --base auto (builds a debootstrap base) or `docker load` the image"
        )
    return BaseChoice(DEBOOTSTRAP_BASE, "build")


# --------------------------------------------------------------------------- content hash


def node_files(root: Path) -> list[tuple[str, bytes]]:
    """Every file of node/ that goes into the image, as (relative path, bytes), sorted."""
    return tree_files(root, "node")


def tree_files(root: Path, rel: str) -> list[tuple[str, bytes]]:
    """Every file under root/rel (caches skipped), as (path relative to root, bytes), sorted."""
    files: list[tuple[str, bytes]] = []
    for dirpath, dirnames, filenames in os.walk(root / rel):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES)
        )
        for name in filenames:
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / name
            files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    files.sort()
    return files


def content_hash(files: list[tuple[str, bytes]], lock: bytes, dockerfile: str, base_id: str) -> str:
    """12 hex digits over the node tree, the node lock, the Dockerfile text and the base image id.

    Each part is length-prefixed so moving bytes between parts changes the hash.
    """
    parts = [("base", base_id.encode()), ("dockerfile", dockerfile.encode()), ("lock", lock)]
    for path, data in sorted(files):
        parts += [("path", path.encode()), ("file", data)]
    return hash_parts(parts)


def hash_parts(parts: list[tuple[str, bytes]]) -> str:
    """HASH_LEN hex digits over (tag, data) parts, each length-prefixed, in the order given."""
    h = hashlib.sha256()
    for tag, data in parts:
        h.update(f"{tag}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()[:HASH_LEN]


def node_tag(digest: str) -> str:
    return f"{NODE_REPO}:{digest}"


def render_dockerfile(root: Path, base: str) -> str:
    """The node Dockerfile for this base, from templates/node.Dockerfile.j2."""
    return render_template(
        root,
        "node.Dockerfile.j2",
        base=base,
        system_packages=system_packages(base),
        requirements=list(NODE_REQUIREMENTS),
        lock=NODE_LOCK,
    )


def system_packages(base: str) -> list[str]:
    """What apt adds to the base: nothing on the debootstrap base, which has the tools."""
    return [] if base == DEBOOTSTRAP_BASE else list(SYSTEM_PACKAGES)


def render_template(root: Path, name: str, **context: Any) -> str:
    """A Dockerfile template of templates/, rendered strictly (a missing value is an error)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    return env.get_template(name).render(**context)


@dataclass(frozen=True)
class NodeImagePlan:
    """Everything the node image is made of, and the tag that follows from it."""

    root: Path
    base: str
    base_id: str
    dockerfile: str
    lock: bytes
    files: list[tuple[str, bytes]]

    @property
    def digest(self) -> str:
        return content_hash(self.files, self.lock, self.dockerfile, self.base_id)

    @property
    def tag(self) -> str:
        return node_tag(self.digest)


def node_lock(root: Path) -> Path:
    """The node's runtime lock: the only lock the image is built from and hashed over."""
    path = root / NODE_LOCK
    if not path.is_file():
        raise SentrynetError(f"{path} missing: the image pins versions from it (make lock)")
    return path


def plan_node_image(root: Path, base: str, base_id: str) -> NodeImagePlan:
    lock_path = node_lock(root)
    if not (root / "templates" / "node.Dockerfile.j2").is_file():
        raise SentrynetError(
            f"{root}/templates/node.Dockerfile.j2 missing: run sentrynet from a checkout "
            "(pip install -e .)"
        )
    return NodeImagePlan(
        root=root,
        base=base,
        base_id=base_id,
        dockerfile=render_dockerfile(root, base),
        lock=lock_path.read_bytes(),
        files=node_files(root),
    )


# --------------------------------------------------------------------------- docker access


def docker_client(timeout: int = 1800) -> Any:
    """A docker SDK client, or a SentrynetError saying how to get a daemon."""
    import docker  # lazy: keeps `sentrynet --help` fast

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        raise SentrynetError(
            f"Docker daemon not reachable ({exc}); start it (dockerd / systemctl start docker) "
            "or run .ci/run, which starts it"
        ) from exc
    return client


def image_id(client: Any, ref: str) -> str | None:
    """The local image id of `ref`, or None when it is not present."""
    import docker.errors

    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def try_pull(client: Any, ref: str) -> bool:
    """Pull `ref`; False (not an error) when no registry answers."""
    import docker.errors

    try:
        client.images.pull(ref)
    except docker.errors.APIError:
        return False
    return True


def node_image_tag(root: Path | None = None, client: Any = None, mode: BaseMode = "auto") -> str:
    """The tag the current tree builds to. Cheap: inspects local images, never pulls or builds.

    Fails (with the fix) when no base image exists yet: run `sentrynet images build` first.
    """
    root = root or repo_root()
    base, base_id = local_base(client or docker_client(), mode, "node")
    return plan_node_image(root, base, base_id).tag


def local_base(client: Any, mode: BaseMode, what: str) -> tuple[str, str]:
    """(ref, id) of the base image already on this machine; never pulls or builds.

    Fails (with the fix) when there is none yet: then the `what` image tag is not known."""
    choice = choose_base(lambda ref: image_id(client, ref) is not None, lambda _ref: False, mode)
    base_id = image_id(client, choice.ref) if choice.action == "use" else None
    if base_id is None:
        raise SentrynetError(
            f"no base image yet, so the {what} image tag is not known: run `sentrynet images build`"
        )
    return choice.ref, base_id


# --------------------------------------------------------------------------- locking, logs


@contextmanager
def build_lock(progress: Progress) -> Iterator[None]:
    """One image build on this machine at a time.

    Images are machine-wide: two checkouts (or two `make test` in one) must not debootstrap
    or build the same tag at once. The lock file lives in the temp dir for that reason.
    """
    path = Path(tempfile.gettempdir()) / f"sentrynet-images-{os.getuid()}.lock"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.say(f"another image build runs on this machine ({path}); waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log_path(root: Path, name: str) -> Path:
    logs = root / ".cache" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / name


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL what is left after 10 s, reap the leader."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 0)  # the leader is gone; are its children?
                continue
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], log: Path, what: str, hint: str = "") -> None:
    """Run `cmd` with output to `log`; on failure raise with the log's tail and a hint."""
    with open(log, "ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        # its own process group: an interrupt stops all of it (debootstrap's dpkg and tar
        # children too), so nothing writes into a directory the caller is about to delete
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    if proc.returncode != 0:
        raise SentrynetError(
            f"{what} failed (exit {proc.returncode}); last lines of {log}:\n{tail(log)}"
            + (f"\n{hint}" if hint else "")
        )


# --------------------------------------------------------------------------- wheelhouse


def wheelhouse_key(lock: bytes) -> str:
    """Wheels depend on the node lock, the requirement list and the host's Python and machine."""
    h = hashlib.sha256()
    h.update(lock)
    h.update("\n".join(NODE_REQUIREMENTS).encode())
    h.update(f"cp{sys.version_info.major}{sys.version_info.minor}-{os.uname().machine}".encode())
    return h.hexdigest()[:HASH_LEN]


def check_host_python(version: tuple[int, int] = sys.version_info[:2]) -> None:
    """Host-built wheels only fit the image when the host runs the image's Python (3.11)."""
    if version != IMAGE_PYTHON:
        want = ".".join(map(str, IMAGE_PYTHON))
        raise SentrynetError(
            f"the host venv runs Python {'.'.join(map(str, version))}, the image Python {want}: "
            f"its compiled wheels would not install. Recreate .venv with python{want} "
            f"(make clean && make venv PYTHON=python{want})"
        )


def ensure_wheelhouse(root: Path, progress: Progress) -> Path:
    """Build (once per node lock) the node's wheels with the host venv's pip into
    .cache/wheelhouse."""
    check_host_python()
    lock_path = node_lock(root)
    key = wheelhouse_key(lock_path.read_bytes())
    target = root / ".cache" / "wheelhouse" / key
    if (target / ".complete").is_file():
        progress.say(f"wheelhouse {target.relative_to(root)} reused")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    log = log_path(root, f"wheelhouse-{key}.log")
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-c",
           str(lock_path), "-w", str(tmp), *NODE_REQUIREMENTS]  # fmt: skip
    try:
        with progress.step(f"wheelhouse: pip wheel {' '.join(NODE_REQUIREMENTS)} (log {log})"):
            run_logged(
                cmd,
                log,
                "building the wheelhouse",
                hint="fastecdsa (a py-libp2p dependency) is compiled here: it needs gcc and "
                "libgmp-dev on the host (apt-get install gcc libgmp-dev).",
            )
        shutil.copyfile(lock_path, tmp / NODE_LOCK)
        (tmp / ".complete").write_text(f"{len(list(tmp.glob('*.whl')))} wheels\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- debootstrap base


def debian_mirror(sources: list[Path] | None = None, suite: str = DEBIAN_SUITE) -> str | None:
    """The Debian mirror apt already uses for `suite`, read from the apt sources.

    SENTRYNET_DEBIAN_MIRROR overrides. Understands one-line (.list) and deb822 (.sources).
    """
    override = os.environ.get("SENTRYNET_DEBIAN_MIRROR")
    if override:
        return override
    if sources is None:
        sources = [Path("/etc/apt/sources.list")]
        d = Path("/etc/apt/sources.list.d")
        if d.is_dir():
            sources += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)
        for types, uris, suites in entries:
            if "deb" in types and suite in suites:
                for uri in uris:
                    if uri.startswith(("http://", "https://", "file:", "ftp://")):
                        return uri
    return None


def parse_one_line(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", "", line)  # drop [arch=... signed-by=...] options
        fields = line.split()
        if len(fields) >= 3:
            entries.append(([fields[0]], [fields[1]], [fields[2]]))
    return entries


def parse_deb822(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for raw in stanza.splitlines():
            if raw.lstrip().startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        entries.append((fields.get("types", []), fields.get("uris", []), fields.get("suites", [])))
    return entries


def apt_install(packages: list[str], progress: Progress, log: Path) -> None:
    with progress.step(f"apt-get install {' '.join(packages)}"):
        env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
        run_logged([*env_cmd, "apt-get", "update", "-q"], log, "apt-get update")
        run_logged([*env_cmd, "apt-get", "install", "-y", "-q", *packages], log, "apt-get install")


def build_debootstrap_base(root: Path, progress: Progress) -> None:
    """Make DEBOOTSTRAP_BASE from a minbase debootstrap rootfs (needs root, ~60 s)."""
    if os.geteuid() != 0:
        raise SentrynetError(
            f"no base image: {PYTHON_BASE} cannot be pulled here, and building "
            f"{DEBOOTSTRAP_BASE} with debootstrap needs root. Run `sudo .venv/bin/sentrynet "
            f"images build` once, or `docker load` a {PYTHON_BASE} image."
        )
    log = log_path(root, "base-debootstrap.log")
    missing = [p for p, probe in (("debootstrap", "debootstrap"),) if not shutil.which(probe)]
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        missing.append("debian-archive-keyring")
    if missing:
        if not shutil.which("apt-get"):
            raise SentrynetError(f"install {' '.join(missing)} (no apt-get on this machine)")
        apt_install(missing, progress, log)
    mirror = debian_mirror()
    if mirror is None:
        raise SentrynetError(
            f"no Debian mirror for {DEBIAN_SUITE} in /etc/apt/sources.list(.d); "
            "set SENTRYNET_DEBIAN_MIRROR to one"
        )
    rootfs = Path(tempfile.mkdtemp(prefix="sentrynet-rootfs-", dir="/var/tmp"))
    try:
        with progress.step(f"debootstrap {DEBIAN_SUITE} minbase from {mirror} (log {log})"):
            run_logged(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={DEBOOTSTRAP_INCLUDE}",
                    DEBIAN_SUITE,
                    str(rootfs),
                    mirror,
                ],
                log,
                "debootstrap",
            )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        with progress.step(f"docker import {DEBOOTSTRAP_BASE}"):
            import_rootfs(rootfs, log)
    finally:
        remove_rootfs(rootfs)


def mounts_under(root: Path, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `root` (mountinfo's 5th field, octal escapes decoded)."""
    base = os.path.realpath(root)
    out = []
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == base or point.startswith(base + "/"):
            out.append(point)
    return out


def remove_rootfs(rootfs: Path) -> None:
    """Delete a debootstrap rootfs, first unmounting what an interrupted debootstrap left
    mounted inside it (proc, sys, dev/pts), deepest first. Deleting through a mount that is
    still there would walk into the host's /proc or /sys (or a bind-mounted /dev) and
    delete host files, so a rootfs that cannot be unmounted is left in place, named."""
    for point in sorted(mounts_under(rootfs), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = mounts_under(rootfs)
    if left:
        raise SentrynetError(
            f"{rootfs}: still mounted after umount: {', '.join(left)}; not deleting it. "
            f"Unmount them (`umount -l PATH`), then remove {rootfs}"
        )
    shutil.rmtree(rootfs, ignore_errors=True)


def import_rootfs(rootfs: Path, log: Path) -> None:
    """`tar -C rootfs -c . | docker import` with the base label and a sane default CMD."""
    with open(log, "ab") as fh:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
            stdout=subprocess.PIPE,
            stderr=fh,
        )
        imp = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                f"LABEL {IMAGE_LABEL}=base",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                'CMD ["python3"]',
                "-",
                DEBOOTSTRAP_BASE,
            ],
            stdin=tar.stdout,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar_rc = tar.wait()
    if tar_rc != 0 or imp.returncode != 0:
        raise SentrynetError(
            f"docker import of the rootfs failed; last lines of {log}:\n{tail(log)}"
        )


# --------------------------------------------------------------------------- node image


def ensure_base(
    client: Any, root: Path, progress: Progress, mode: BaseMode, say: bool = True
) -> BaseChoice:
    def can_pull(ref: str) -> bool:
        with progress.step(f"docker pull {ref}"):
            ok = try_pull(client, ref)
        if not ok:
            progress.say(f"{ref} cannot be pulled (no registry); using a debootstrap base")
        return ok

    choice = choose_base(lambda ref: image_id(client, ref) is not None, can_pull, mode)
    if choice.action == "build":
        build_debootstrap_base(root, progress)
    if say:
        progress.say(f"base image {choice.ref}")
    return choice


def build_node_image(client: Any, plan: NodeImagePlan, progress: Progress) -> None:
    """Assemble a build context (Dockerfile, wheelhouse, node/) and `docker build` it."""
    wheelhouse = ensure_wheelhouse(plan.root, progress)
    log = log_path(plan.root, f"node-build-{plan.digest}.log")
    ctx_parent = plan.root / ".cache" / "build"
    ctx_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="node-", dir=ctx_parent) as ctx_dir:
        ctx = Path(ctx_dir)
        (ctx / "Dockerfile").write_text(plan.dockerfile)
        shutil.copytree(wheelhouse, ctx / "wheelhouse", ignore=shutil.ignore_patterns(".complete"))
        for rel, data in plan.files:
            dest = ctx / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        docker_build(client, ctx, plan.tag, plan.digest, plan.base, log, progress)


def docker_build(
    client: Any, ctx: Path, tag: str, digest: str, base: str, log: Path, progress: Progress
) -> None:
    """`docker build` an assembled context (never pulls), streaming its output to `log`."""
    with progress.step(f"docker build {tag} (log {log})"), open(log, "w") as fh:
        stream = client.api.build(
            path=str(ctx),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            labels={HASH_LABEL: digest},
            # The debootstrap base has everything: build with no network at all.
            network_mode="none" if base == DEBOOTSTRAP_BASE else None,
        )
        for chunk in stream:
            if "error" in chunk:
                fh.write(f"ERROR: {chunk['error']}\n")
                fh.flush()
                raise SentrynetError(
                    f"docker build {tag} failed: {chunk['error'].strip()}\n"
                    f"last lines of {log}:\n{tail(log)}"
                )
            text = chunk.get("stream", "")
            if text:
                fh.write(text)
                fh.flush()
                if text.startswith("Step "):
                    progress.say("  " + text.strip()[:110])


def created_epoch(created: str) -> float | None:
    """Docker's `Created` (RFC 3339, UTC, nanoseconds) as epoch seconds; None if unreadable."""
    try:
        return float(calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def prune_candidates(
    images: list[tuple[list[str], float | None]], keep: str, now: float, repo: str = NODE_REPO
) -> list[str]:
    """Tags to remove from (tags, created) pairs: all but `keep`, the newest KEEP_OLD_IMAGES
    others, and anything younger than KEEP_YOUNGER_S or of unknown age."""
    others = [(tags, t) for tags, t in images if keep not in tags]
    others.sort(key=lambda it: it[1] or float("inf"), reverse=True)
    doomed: list[str] = []
    for tags, created in others[KEEP_OLD_IMAGES:]:
        if created is None or now - created < KEEP_YOUNGER_S:
            continue
        doomed += [t for t in tags if t.startswith(f"{repo}:")]
    return doomed


def prune_node_images(client: Any, keep: str, progress: Progress) -> None:
    """Remove old sentrynet-node images; never forced, so an image a container uses stays."""
    prune_images(client, NODE_REPO, "node", keep, progress)


def prune_images(client: Any, repo: str, kind: str, keep: str, progress: Progress) -> None:
    """Remove old images of `repo` labelled `sentrynet.image=kind` (prune_candidates)."""
    import docker.errors

    found = client.images.list(name=repo, filters={"label": f"{IMAGE_LABEL}={kind}"})
    pairs = [(list(im.tags), created_epoch(im.attrs.get("Created", ""))) for im in found]
    for tag in prune_candidates(pairs, keep, time.time(), repo):
        try:
            client.images.remove(tag)
            progress.say(f"pruned {tag}")
        except docker.errors.APIError:
            pass


def ensure_node_image(
    progress: Progress | None = None,
    root: Path | None = None,
    mode: BaseMode = "auto",
    prune: bool = True,
) -> str:
    """Build the node image if the current tree's tag is missing; return the tag."""
    progress = progress or Progress()
    root = root or repo_root()
    client = docker_client()
    with build_lock(progress):
        choice = ensure_base(client, root, progress, mode)
        base_id = image_id(client, choice.ref)
        if base_id is None:
            raise SentrynetError(f"base image {choice.ref} missing after it was made")
        plan = plan_node_image(root, choice.ref, base_id)
        if image_id(client, plan.tag) is not None:
            progress.say(f"{plan.tag} is up to date")
            return plan.tag
        build_node_image(client, plan, progress)
        progress.say(f"built {plan.tag}")
        if prune:
            prune_node_images(client, plan.tag, progress)
        return plan.tag
