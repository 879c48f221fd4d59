"""Small named overrides of py-libp2p 0.8.1 behaviour; each module names what it corrects."""

from __future__ import annotations

from libp2p.abc import IHost


def apply_host_overrides(host: IHost) -> None:
    """Apply every host-level override (called once, before the host runs)."""
    return None
