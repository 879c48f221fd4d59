"""Shipping images to another Docker engine without a registry: `docker save | docker load`
over the two engines' APIs, checked by content.

The hosts of a multi-host swarm (docs/multi-host.md) each need the images the testnet runs,
and no registry is reached. Our tags name a content hash (harness/infra/images.py), so an
engine that has the tag with the same image id is up to date and nothing is sent; otherwise
the image is streamed from `docker save` on this engine into `docker load` on the other,
and afterwards the other engine must hold the tag with the same id and the same
content-hash label, or shipping fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import docker
import docker.errors

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra.images import HASH_LABEL
from harness.progress import Progress

CHUNK = 2 * 1024 * 1024  # bytes per piece of the save stream


@dataclass(frozen=True)
class Shipped:
    ref: str
    image_id: str
    sent_bytes: int  # 0: the other engine had it already

    def describe(self, engine: str) -> str:
        if not self.sent_bytes:
            return f"{self.ref}: already on {engine} ({self.image_id[:19]})"
        size = f"{self.sent_bytes / 1e6:.0f} MB"
        return f"{self.ref}: shipped to {engine}, {size} ({self.image_id[:19]})"


def _image_of(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def ship(ref: str, to: docker.DockerClient, progress: Progress, engine: str = "") -> Shipped:
    """Make engine `to` hold image `ref` exactly as this engine does (same id)."""
    here = _image_of(docker_ops.client(), ref)
    if here is None:
        raise SentrynetError(
            f"{ref} is not on this engine: `sentrynet images build` first (nothing is pulled)"
        )
    there = _image_of(to, ref)
    if there is not None and there.id == here.id:
        return Shipped(ref, here.id, 0)
    sent = [0]

    def stream() -> Iterator[bytes]:
        for chunk in here.save(chunk_size=CHUNK, named=True):
            sent[0] += len(chunk)
            yield chunk

    with progress.step(f"ship {ref} to {engine or 'the other engine'} (docker save | load)"):
        try:
            to.api.load_image(stream())
        except docker.errors.APIError as exc:
            raise SentrynetError(
                f"loading {ref} into {engine or 'the other engine'} failed: {exc.explanation}"
            ) from exc
    there = _image_of(to, ref)
    if there is None or there.id != here.id:
        raise SentrynetError(
            f"{ref} on {engine or 'the other engine'} is "
            f"{there.id if there else 'missing'} after loading, not {here.id}"
        )
    want = (here.labels or {}).get(HASH_LABEL)
    if want is not None and (there.labels or {}).get(HASH_LABEL) != want:
        raise SentrynetError(f"{ref}: content-hash label differs after loading")
    return Shipped(ref, here.id, sent[0])
