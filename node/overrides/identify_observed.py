"""Identify's observedAddr from the connection the request came in on.

Upstream (py-libp2p 0.8.1, `identify_handler_for` -> `_prefer_circuit_addr`) reports as
the peer's observed address the circuit address of ANY relayed connection it has to that
peer, whatever connection the identify request arrived on. Right after DCUtR a peer has
both: the relayed connection and the new direct one. Identify on the direct connection
then tells the peer its observed address is `/ip4/<relay>/.../p2p-circuit/p2p/<peer>`
instead of the TCP address we see it at, so the peer never learns its hole-punched
address on exactly the connections DCUtR creates (a rust-libp2p peer records observed
addresses per connection; shown in tests/interop/test_interop.py). go- and rust-libp2p
report the remote address of the connection the identify stream is on.
On a QUIC connection upstream's observed address is `/ip4/<ip>/tcp/<port>` (its
`_remote_address_to_multiaddr` knows only TCP); we report `/ip4/<ip>/udp/<port>/quic-v1`.

We keep upstream's handler and its rule for relayed connections, and restrict the lookup
to the stream's own connection: the handler is wrapped so the stream's muxed connection is
known (a context variable, set in the handler's own task) to the replaced module-level
`_prefer_circuit_addr`. Without that context (a call from elsewhere) upstream's rule runs.
"""

from __future__ import annotations

import contextvars
from typing import Any

import libp2p.identity.identify.identify as identify_mod
from libp2p.abc import IHost, INetStream
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from multiaddr import Multiaddr

from node.overrides.quic_reuse import direct_addr

_upstream_prefer = identify_mod._prefer_circuit_addr
_stream_conn: contextvars.ContextVar[Any] = contextvars.ContextVar("identify_stream_conn")


def circuit_addr_of_this_connection(
    host: IHost, peer_id: Any, fallback: Multiaddr | None
) -> Multiaddr | None:
    """The circuit address when the identify stream's own connection is relayed, else
    `fallback` (the socket's remote address)."""
    muxed = _stream_conn.get(None)
    if muxed is None:
        return _upstream_prefer(host, peer_id, fallback)
    try:
        conns = host.get_network().get_connections(peer_id)
    except Exception:
        return fallback
    for conn in conns:
        if getattr(conn, "muxed_conn", None) is not muxed:
            continue
        try:
            addrs = conn.get_transport_addresses() or []
        except Exception:
            return fallback
        for addr in addrs:
            if "/p2p-circuit" in str(addr):
                return addr if isinstance(addr, Multiaddr) else fallback
        for addr in addrs:
            if "/udp/" in str(addr) and "/quic" in str(addr):
                # upstream writes every observed address as /tcp/<port>, a QUIC one too
                return Multiaddr(direct_addr(str(addr)))
        return fallback
    return fallback


def install_identify_observed_per_connection(host: IHost) -> None:
    """Wrap the host's identify handler (once) and replace the module-level lookup."""
    h: Any = host
    if getattr(h, "_sentrynet_identify_observed", False):
        return
    upstream_handler = h.get_mux().handlers[IDENTIFY_ID]

    async def handle_identify(stream: INetStream) -> None:
        _stream_conn.set(stream.muxed_conn)
        await upstream_handler(stream)

    host.set_stream_handler(IDENTIFY_ID, handle_identify)
    identify_mod._prefer_circuit_addr = circuit_addr_of_this_connection
    h._sentrynet_identify_observed = True
