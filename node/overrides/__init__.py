"""Every place the node reaches into py-libp2p 0.8.1 below its public interfaces.

Each module names the upstream behaviour it corrects or the gap it fills; each behaviour
is shown on upstream code in tests/node/test_overrides.py (or the test the module names).
upstream.py lists every internal they use and checks, at start-up, that the installed
py-libp2p is the pinned release and that each internal is still there.

Applied once, by `apply()`, before the host runs (node/app.py):
- identify.py        re-identify on every connection (upstream skips a peer whose
                     protocols are cached), retry a failed identify, and a hook when
                     identify finishes
- identify_observed.py  identify's observedAddr from the connection the request came in
                     on (upstream: a circuit address if any connection to the peer is relayed)
- circuit_addrs.py   advertise circuit addresses (upstream get_addrs mangles them)
- negative_cache.py  a peer whose dial failed once is not blocked for 60 s
- auto_connector.py  the swarm does not dial every peer-store peer on its own
- dial_peer.py       Swarm.dial_peer goes through the node's single-flight dialer
- no_redial.py       pubsub's peer registration and identify never dial (upstream's
                     retries dialed a peer the node had just closed)
- pubsub_keep_subscriptions.py  a peer still connected keeps its subscriptions when a
                     pubsub stream to it ends (upstream erases them, and the peer never
                     announces them again: the node stops sending it anything)
- pubsub_register_retry.py  pubsub retries registering a connected peer whose stream
                     negotiation failed (upstream gives up for good: a crossed dial's
                     duplicate close left a sentry never sending to the other)
- pubsub_seqno.py    gossipsub seqnos seeded with nanoseconds, not seconds
- pubsub_rpc.py      a gossipsub RPC that does not parse resets that peer's stream
                     (upstream: the exception escapes and takes the node down)
- idontwant.py       IDONTWANT only for messages of 1 KiB or more (upstream: every one)
- opportunistic_graft.py  no opportunistic grafting without peer scoring (upstream
                     grafts two more peers every heartbeat: meshes overfill, prune and collapse)
- ihave_targets.py   IHAVE gossip to peers outside the mesh whatever their GRAFT backoff
                     (upstream: none to a peer in backoff, so a collapsed mesh gossips to nobody)
- seen_before_task.py  a gossip message already seen is dropped where it is read
                     (upstream: a service task per copy, which then drops it)
- pubsub_batch.py    the RPCs queued for a peer go out in one stream write (upstream:
                     a Yamux frame, a Noise message and a system call per RPC)
- sender_record.py   our signed peer record built once per address change, sent to a
                     peer once per change, a peer's verified once per change (upstream:
                     all three on every pubsub RPC)
- validation_cache.py  pubsub's validation-result cache as an ordered dict (upstream:
                     a list scanned on every put, up to a thousand ids)
- yamux_window.py    a Yamux window update per half window read, as go-yamux sends
                     (upstream: one per read)
- yamux_env.py       Yamux's PY_YAMUX_* variables read once (upstream: from os.environ
                     on every stream read)
- quick_locks.py     a free stream, Yamux or frame-write lock is taken without a trip
                     through trio's scheduler (upstream: every acquire is a schedule point,
                     five per RPC written)
- stream_guard.py    a stream handler that raises resets its stream and is counted
                     (upstream: the exception ends the connection and the node)
- task_parent.py     a new service task finds its parent by a lookup (upstream walks
                     every task of the service, for every gossip message received)
- multistream_pipeline.py  multistream-select header and first proposal in one flight:
                     one round trip per negotiation (upstream: two)
- quic_reuse.py      a QUIC dial leaves from the listening UDP socket, so the peer sees the
                     mapping of our listen port (upstream: a fresh socket per dial)
Applied by the service that needs it:
- punch_inbound.py   an accepted connection from an endpoint our DCUtR punch dials is
                     upgraded as the client, the spec's role (upstream: always server;
                     installed by node/dcutr/service.py)
Called where needed (no patch, a reach below the interfaces):
- multi_addr_dial.py dial every TCP address of a peer (upstream dials one per class)
- dial_unknown.py    dial an address whose peer id is not known yet
- raw_dial.py        a raw TCP connection from the swarm's transport (optionally from
                     our listen port, for DCUtR)
- identify.identify_now, observed_addrs.py  run identify now; the addresses it observed
- stream_on.py       open a stream on one chosen connection (upstream picks any)
- conn_parts.py      a connection's secured connection and close event (Yamux)
- read_watch.py      when bytes last arrived on a connection (per connection, by
                     node/liveness.py)
Relay hop/stop are reimplemented in node/relay/ (see node/relay/server.py for why).
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr
from libp2p.abc import IHost
from libp2p.pubsub.pubsub import Pubsub

from node.overrides.auto_connector import disable_auto_connector
from node.overrides.circuit_addrs import install_circuit_addrs
from node.overrides.dial_peer import DialRoute, route_dial_peer
from node.overrides.identify import IdentifyHook, install_identify_hook
from node.overrides.identify_observed import install_identify_observed_per_connection
from node.overrides.idontwant import install_idontwant_threshold
from node.overrides.ihave_targets import install_ihave_without_backoff
from node.overrides.multistream_pipeline import install_pipelined_multistream
from node.overrides.negative_cache import shorten_negative_cache
from node.overrides.no_redial import install_pubsub_no_redial
from node.overrides.opportunistic_graft import install_no_opportunistic_graft
from node.overrides.pubsub_batch import install_pubsub_batch
from node.overrides.pubsub_keep_subscriptions import install_pubsub_keep_subscriptions
from node.overrides.pubsub_register_retry import install_pubsub_register_retry
from node.overrides.pubsub_rpc import install_pubsub_rpc_guard
from node.overrides.pubsub_seqno import fix_pubsub_seqno
from node.overrides.quic_reuse import install_quic_dial_from_listener
from node.overrides.quick_locks import install_quick_locks
from node.overrides.seen_before_task import install_seen_before_task
from node.overrides.sender_record import install_sender_record_cache
from node.overrides.stream_guard import OnHandlerError, install_stream_guard
from node.overrides.task_parent import install_task_parent_index
from node.overrides.validation_cache import install_ordered_validation_cache
from node.overrides.yamux_env import install_yamux_env_once
from node.overrides.yamux_window import install_yamux_window_hysteresis


def apply(
    host: IHost,
    pubsub: Pubsub,
    dialer: DialRoute,
    circuit_addrs: Callable[[], list[multiaddr.Multiaddr]],
    on_handler_error: OnHandlerError,
) -> IdentifyHook:
    """Apply every override, once, after the host and pubsub are built and before the
    host runs; returns the identify hook (subscribe(cb(peer)) after identify/push).
    `on_handler_error(protocol, exc)` counts a stream handler that raised."""
    install_stream_guard(host, on_handler_error)
    install_circuit_addrs(host, circuit_addrs)
    shorten_negative_cache(host)
    disable_auto_connector(host)
    route_dial_peer(host, dialer)
    fix_pubsub_seqno(pubsub)
    install_pubsub_rpc_guard(pubsub)
    install_pubsub_batch(pubsub)
    install_seen_before_task(pubsub)
    install_ordered_validation_cache(pubsub)
    install_pubsub_no_redial(pubsub)
    install_pubsub_register_retry(pubsub)
    install_pubsub_keep_subscriptions(pubsub)
    install_idontwant_threshold(pubsub.router)
    install_no_opportunistic_graft(pubsub.router)
    install_ihave_without_backoff(pubsub.router)
    install_sender_record_cache()
    install_yamux_window_hysteresis()
    install_yamux_env_once()
    install_quick_locks()
    install_task_parent_index()
    install_identify_observed_per_connection(host)
    install_pipelined_multistream(host)
    install_quic_dial_from_listener()
    return install_identify_hook(host)
