"""Build the py-libp2p host: TCP, Noise only, Yamux, identify(+push), ping; key file I/O.

py-libp2p's `new_host` offers Noise, TLS, SECIO and plaintext by default; we pass
`sec_opt` so only Noise is negotiated. The swarm's auto-connector (which redials every
peer it ever heard of whenever the connection count is under `low_watermark`) is turned
off: node/discovery.py decides whom to keep connected (p2p.max_connections).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519
from libp2p.network.config import ConnectionConfig
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.config import NodeConfig

# py-libp2p's GossipSub default heartbeat_interval is 120 s: a mesh would take minutes to
# form and repair. gossipsub 1.1 / 1.2 (IDONTWANT) are offered.
GOSSIP_HEARTBEAT_S = 1
# Mesh degree: a small mesh, as the testnets are small. What bounds the mesh is D_high: a
# peer prunes only above it, and peers graft each other, so with D_high 12 every peer of
# an 8-node testnet ended up in every mesh and each gossip message was received and sent
# 6-7 times. Measured with bench/idle_profile.py --cpu-only --nodes 4 --followers 4
# (7 peers each, 40 s, two runs each): D/D_low/D_high 6/4/12 0.072 and 0.075 cores per
# node, 4/3/8 0.066 and 0.066, 4/3/5 0.046 and 0.047.
# Those figures were taken while upstream's opportunistic grafting still ran (grafting two
# peers a heartbeat, then pruning at random): meshes churned and some sat below D_low, so
# part of the saving was a broken mesh (node/overrides/opportunistic_graft.py).
GOSSIP_D, GOSSIP_D_LOW, GOSSIP_D_HIGH = 4, 3, 5
# Two of py-libp2p 0.8.1's "gossipsub 2.0" additions (on by default, in no libp2p spec)
# are switched off; each stalled consensus for a minute or more in the testnets, and
# tests/node/test_overrides.py shows each on upstream code:
# - adaptive gossip: every 30 s the router rates the network's "health" and, below 0.7,
#   sets heartbeat_interval = max(60, ...). Mesh peers count as healthy only with a
#   positive score outside any topic, which nothing gives them, so a healthy mesh rates
#   about 0.6: 30 s after start every node repaired its mesh and sent IHAVE once a
#   minute, and a stopped validator's place in the mesh stayed empty for up to 60 s.
# - spam protection: at most 10 messages per topic per second per *forwarding* peer
#   (ourselves included when we publish); the rest are marked seen and delivered
#   locally but neither forwarded nor cached for IWANT, and the forwarder is penalised.
#   A sentry forwards its whole network's consensus traffic and a validator re-sends a
#   round's messages in one burst when the round times out: both exceed it, silently.
#   Floods are bounded here by the chain's own validation (node/chain/service.py).
GOSSIP_ADAPTIVE, GOSSIP_SPAM_LIMIT = False, False
UPGRADE_TIMEOUT_S = 30.0


def load_or_create_key(path: str) -> KeyPair:
    """Ed25519 key in libp2p protobuf encoding; created (0600) only when missing."""
    p = Path(path)
    if p.exists():
        priv = deserialize_private_key(p.read_bytes())
        return KeyPair(priv, priv.get_public_key())
    kp = create_new_key_pair()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_bytes(kp.private_key.serialize())
    os.chmod(tmp, 0o600)
    tmp.replace(p)
    return kp


def build_host(
    cfg: NodeConfig,
    key_pair: KeyPair,
    addrs_factory: Callable[[list[multiaddr.Multiaddr]], list[multiaddr.Multiaddr]] | None,
) -> IHost:
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519().private_key)
    conn_cfg = ConnectionConfig(
        max_connections=max(cfg.p2p.max_connections * 4, 64),
        min_connections=0,
        low_watermark=0,
        high_watermark=max(cfg.p2p.max_connections * 4, 64),
        max_connections_per_peer=4,
        dial_timeout=5.0,
        # upstream's 10 s cut relayed upgrades (Noise + Yamux, ~4 round trips over the
        # relay) in the loaded sentry testnet ("Inbound upgrade timeout exceeded")
        inbound_upgrade_timeout=UPGRADE_TIMEOUT_S,
        outbound_upgrade_timeout=UPGRADE_TIMEOUT_S,
    )
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_ID: noise},
        muxer_preference="YAMUX",
        listen_addrs=[multiaddr.Multiaddr(a) for a in cfg.p2p.listen_addrs],
        connection_config=conn_cfg,
        addrs_factory=addrs_factory,
        enable_mDNS=False,
        enable_upnp=False,
    )


def gossipsub_options(upstream_extras: bool = False) -> dict[str, Any]:
    """The GossipSub arguments the node sets; with `upstream_extras`, without switching
    off the two additions above (what tests/node/test_overrides.py shows them on)."""
    opts: dict[str, Any] = {
        "protocols": [PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        "degree": GOSSIP_D,
        "degree_low": GOSSIP_D_LOW,
        "degree_high": GOSSIP_D_HIGH,
        "heartbeat_interval": GOSSIP_HEARTBEAT_S,
        "heartbeat_initial_delay": 0.1,
    }
    if not upstream_extras:
        opts["adaptive_gossip_enabled"] = GOSSIP_ADAPTIVE
        opts["spam_protection_enabled"] = GOSSIP_SPAM_LIMIT
    return opts


def build_pubsub(host: IHost, upstream_extras: bool = False) -> tuple[Pubsub, GossipSub]:
    """Gossipsub 1.2/1.1 with a 1 s heartbeat; create it before the first connection."""
    gossipsub = GossipSub(**gossipsub_options(upstream_extras))
    return Pubsub(host, gossipsub), gossipsub
