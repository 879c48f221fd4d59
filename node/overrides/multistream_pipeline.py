"""multistream-select in one round trip: the header and the first proposal sent together.

Upstream (py-libp2p 0.8.1, `MultiselectClient.select_one_of`) writes the
`/multistream/1.0.0` header, waits for the peer's header, and only then proposes a
protocol and waits again: two round trips for every negotiation. A new connection
negotiates twice (security, then muxer) and every stream once, so on a 100 ms path a
punched connection spent 400 ms negotiating and each relayed stream (a HOP, a DCUtR
exchange) 200 ms before its first byte. go-libp2p and rust-libp2p send the header and
the proposal in one go (go's SelectProtoOrFail, rust's V1Lazy dialer side): the
specification lets the initiator do so, and every listener reads them in order. Here the
first proposal travels with the header; a refused first proposal (`na`) falls back to
upstream's one-at-a-time for the rest. One round trip per negotiation saved.

Installed on the host's stream negotiation and on the transport upgrader's security and
muxer negotiation (`install_pipelined_multistream`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from libp2p.abc import IMultiselectCommunicator
from libp2p.custom_types import TProtocol
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    ProtocolNotSupportedError,
)
from libp2p.protocol_muxer.multiselect_client import (
    DEFAULT_NEGOTIATE_TIMEOUT,
    MULTISELECT_PROTOCOL_ID,
    PROTOCOL_NOT_FOUND_MSG,
    MultiselectClient,
    is_valid_handshake,
)


class PipelinedMultiselectClient(MultiselectClient):
    """`select_one_of` with the header and the first proposal in one flight."""

    async def select_one_of(
        self,
        protocols: Sequence[TProtocol],
        communicator: IMultiselectCommunicator,
        negotiate_timeout: int = DEFAULT_NEGOTIATE_TIMEOUT,
    ) -> TProtocol:
        if not protocols:
            raise MultiselectClientError("no protocol to propose")
        first, rest = protocols[0], protocols[1:]
        with trio.move_on_after(negotiate_timeout):
            try:
                await communicator.write(MULTISELECT_PROTOCOL_ID)
                await communicator.write(first)
                header = await communicator.read()
                if not is_valid_handshake(header):
                    raise MultiselectClientError(
                        f"multiselect protocol ID mismatch: expected "
                        f"{MULTISELECT_PROTOCOL_ID}, got {header!r}"
                    )
                answer = await communicator.read()
            except MultiselectCommunicatorError as error:
                raise MultiselectClientError(f"negotiation failed: {error}") from error
            if answer == first:
                return first
            if answer != PROTOCOL_NOT_FOUND_MSG:
                raise MultiselectClientError(f"unexpected response: {answer!r} to {first}")
            refused = [f"{first}: {PROTOCOL_NOT_FOUND_MSG}"]
            for protocol in rest:
                try:
                    return await self.try_select(communicator, protocol)
                except ProtocolNotSupportedError as error:
                    refused.append(str(error))
            raise MultiselectClientError(
                f"protocols not supported: {list(protocols)} ({'; '.join(refused)})"
            )
        raise MultiselectClientError(
            f"response timed out after {negotiate_timeout}s, protocols tried: {list(protocols)}"
        )


def install_pipelined_multistream(host: Any) -> None:
    """Our client for the host's streams and for the upgrader's security and muxer
    negotiation (each keeps its own MultiselectClient upstream)."""
    client = PipelinedMultiselectClient()
    host.multiselect_client = client
    upgrader = host.get_network().upgrader
    for multistream in (upgrader.security_multistream, upgrader.muxer_multistream):
        multistream._selector.multiselect_client = client
