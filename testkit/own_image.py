"""An image that is nobody's but the user's: one binary and the shared libraries it needs,
nothing else (no shell, no `ip`, no `cat`), made with `docker import` from a tarball built
here. It stands for anyone's own node (`image:` + `command:`) in the Docker tests: if the
harness needed anything inside a foreign image, this one would show it."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

from harness.infra import docker as docker_ops

REPOSITORY = "sentrynet-test-own-image"


def _libraries(binary: Path) -> list[Path]:
    """The shared objects `ldd` resolves for `binary` (the loader included)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def build(binary: Path, name_in_image: str = "/node") -> str:
    """Import `binary` and its libraries as an image; returns its tag (content-addressed, so
    an unchanged binary reuses the image)."""
    files = {name_in_image: binary, **{str(p): p for p in _libraries(binary)}}
    digest = hashlib.sha256()
    for dest, src in sorted(files.items()):
        digest.update(dest.encode() + src.resolve().read_bytes())
    tag = digest.hexdigest()[:12]
    ref = f"{REPOSITORY}:{tag}"
    client = docker_ops.client()
    if client.images.list(name=ref):
        return ref
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("config", "data", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for dest, src in sorted(files.items()):
            data = src.resolve().read_bytes()
            info = tarfile.TarInfo(dest.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    client.api.import_image_from_data(buf.getvalue(), repository=REPOSITORY, tag=tag)
    return ref


def remove(ref: str) -> None:
    docker_ops.client().images.remove(ref, force=True)
