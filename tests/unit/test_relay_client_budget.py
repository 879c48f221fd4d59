"""What the relay client tells the peer budget (relays_pending, node/relay/client.py): the
client's state only, no runtime."""

from __future__ import annotations

import time

from libp2p.peer.id import ID

from node.relay.client import (
    PENDING_GRACE_S,
    Candidate,
    Configured,
    RelayClient,
)

A = ID.from_base58("12D3KooWRq4tRSFbyyCGmKVZrnMvtuR1VYcrhnZAqWMm2vMpmJqt")
B = ID.from_base58("12D3KooWBmwkafWE2fqfzS96VoTZ3QZ2zCPDVxzC4xnuYMUdMahe")
C = ID.from_base58("12D3KooWF2wazsUaTpn1TYUE33sLmMzjJzmhiHGdQxhowaNvSSpi")


def test_configured_reserving_and_just_dialed_relays_are_pending() -> None:
    client = RelayClient()
    client.configured = [
        Configured("/ip4/10.0.0.3/tcp/4001", A),
        Configured("/ip4/10.0.0.9/tcp/4001", None),
    ]
    client._reserving = {B}
    now = time.monotonic()
    client.candidates = {
        C: Candidate(C, "/ip4/10.0.0.7/tcp/4001", "identify", dialed_at=now - 1),
    }
    assert client.relays_pending() == {A, B, C}
    client.candidates[C].dialed_at = now - PENDING_GRACE_S - 1
    assert client.relays_pending() == {A, B}
