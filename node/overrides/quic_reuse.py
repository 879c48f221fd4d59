"""QUIC dials leave from the listening UDP socket (port reuse), as hole punching needs.

Upstream (py-libp2p 0.8.1): `QUICConnection._initiate_connection` gives every outbound
QUIC connection a fresh UDP socket bound to port 0 (and, handed a socket, binds it again
and fails on an unbound `family`). go-libp2p (quic-go's Transport) and rust-libp2p
(libp2p-quic's Endpoint) dial from the socket they listen on. It matters behind NAT: the
peer is known at the router's mapping of its *listen* port (identify's observed address,
what DCUtR sends in CONNECT); a dial from another port gets another mapping that nobody
was told, and a port-restricted-cone router drops the other side's punch to it.

Here an outbound QUIC connection of a transport that listens on the dial's address family
sends through that listener's socket, and the listener routes the answers to it by
connection ID, as it does for the connections it accepted: the connection's first source
connection ID is registered with the listener before the first packet leaves, later ones
by upstream's own ConnectionIdIssued path (it registers with `_listener`), and the
listener removes it when it ends (upstream's `_notify_parent_of_termination`). The
connection reads nothing itself (no `_client_packet_receiver`) and never closes the
socket (`_owns_socket` False). A transport that does not listen dials as upstream does.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from libp2p.transport.quic.connection import QUICConnection
from libp2p.transport.quic.transport import QUICTransport

_ORIGINAL_INITIATE = QUICConnection._initiate_connection
_ORIGINAL_RECEIVER = QUICConnection._client_packet_receiver


def direct_addr(addr: str) -> str:
    """A direct connection's remote address as the node reports it: without the /p2p/<peer>
    a QUIC dial carries, and a QUIC v1 connection as `quic-v1` (py-libp2p 0.8.1 names an
    accepted one's address `/quic`, which is the draft-29 protocol)."""
    addr = addr.split("/p2p/", 1)[0]
    if addr.endswith("/quic"):
        addr += "-v1"
    return addr


def listener_on(transport: Any, remote_ip: str) -> Any | None:
    """The listener of a QUIC `transport` whose socket has `remote_ip`'s address family
    (None: the transport does not listen there)."""
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    for listener in getattr(transport, "_listeners", ()) or ():
        sock = getattr(listener, "_socket", None)
        if sock is not None and sock.family == family and listener.is_listening():
            return listener
    return None


async def _initiate_from_listener(self: Any) -> None:
    """Upstream's initiation, but through the listener's socket when there is one."""
    transport = getattr(self, "_transport", None)
    listener = listener_on(transport, self._remote_addr[0]) if self._socket is None else None
    if listener is None:
        await _ORIGINAL_INITIATE(self)
        return
    cid = self._quic.host_cid
    self._socket = listener._socket
    self._owns_socket = False
    self._listener = listener
    self._listener_connection_id = cid
    await listener._registry.register_connection(cid, self, self._remote_addr)
    self._quic.connect(self._remote_addr, now=time.time())
    await self._transmit()


async def _receive_unless_shared(self: Any) -> None:
    """A connection on the listener's socket is fed by the listener."""
    if not self._owns_socket:
        return
    await _ORIGINAL_RECEIVER(self)


async def send_from_listener(host: Any, dest: tuple[str, int], data: bytes) -> None:
    """One UDP datagram from the host's QUIC listening socket (DCUtR's QUIC punch: the
    packet opens our router's mapping of that socket to `dest`). Raises ConnectionError
    when the host does not listen on QUIC in that address family."""
    for transport in _quic_transports(host):
        listener = listener_on(transport, dest[0])
        if listener is not None:
            await listener._socket.sendto(data, dest)
            return
    raise ConnectionError(f"no QUIC listener to send from to {dest[0]}")


def _quic_transports(host: Any) -> list[Any]:
    manager = host.get_network().transport_manager
    return [t for t in manager.get_transports() if isinstance(t, QUICTransport)]


def install_quic_dial_from_listener() -> None:
    """Class-level, idempotent: every QUIC connection dialed from now on."""
    QUICConnection._initiate_connection = _initiate_from_listener  # type: ignore[method-assign]
    QUICConnection._client_packet_receiver = _receive_unless_shared  # type: ignore[method-assign]


def uninstall_quic_dial_from_listener() -> None:
    """Back to upstream (tests show the upstream behaviour with this)."""
    QUICConnection._initiate_connection = _ORIGINAL_INITIATE  # type: ignore[method-assign]
    QUICConnection._client_packet_receiver = _ORIGINAL_RECEIVER  # type: ignore[method-assign]
