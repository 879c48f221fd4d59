"""NAT behaviour of a router, in RFC 4787 terms, and the presets a topology names.

Why a model: `cone` alone hid which cone. A hole punch, a direct dial into a private node and
a relay's observed address all depend on the two properties RFC 4787 separates: how the
router maps an inside endpoint to a public one (mapping) and which outside packets it lets
back in through that mapping (filtering). The presets are the RFC 3489 names users know;
harness/run/natprobe.py measures both properties the way RFC 5780 does, and the Docker tests
fail when a router does not behave as its preset says.

How the routers implement them (templates/router.sh.j2, rules from harness/infra/natrules.py):
- mapping: MASQUERADE, which keeps the source port while the public 4-tuple is free
  (endpoint-independent with port preservation: every node behind a router has its own p2p
  port and its own ephemeral port range, so they never collide); `--random-fully` picks a
  random public port per mapping (address-and-port-dependent: symmetric).
- filtering: conntrack lets in only replies from the endpoint a mapping was made for
  (address-and-port-dependent). Linux has no full-cone conntrack, so the looser filters are
  DNAT rules per node over its mapped ports, the p2p port and its ephemeral range:
  endpoint-independent lets anyone in; address-dependent lets in an address the node has
  sent to (the kernel's `recent` match keeps the addresses each node sent to, for
  `FILTER_MEMORY_S`). Unlike a real full cone, the ports are open before the node has sent
  from them; the nodes talk to their relay from the first second, so a testnet cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass

EIM = "endpoint-independent"
ADM = "address-dependent"
APDM = "address-and-port-dependent"
BEHAVIOURS = (EIM, ADM, APDM)

# How long an address-dependent filter remembers an address the node sent to (a UDP mapping
# timeout of the order RFC 4787 REQ-5 asks for: at least 2 minutes).
FILTER_MEMORY_S = 300


@dataclass(frozen=True)
class NatModel:
    """What a router does to traffic from behind it."""

    preset: str
    mapping: str
    filtering: str
    port_preserving: bool

    @property
    def punchable(self) -> bool:
        """Can TCP simultaneous open meet here? Only if the public endpoint a peer learns
        from a relay (identify's observed address) is the one used towards that peer."""
        return self.mapping == EIM

    @property
    def inbound_open(self) -> bool:
        """Does anyone on the public side reach a node's mapped ports unasked (full cone)?"""
        return self.filtering == EIM

    def describe(self) -> str:
        kept = "port kept" if self.port_preserving else "random port"
        return f"{self.preset}: mapping {self.mapping}, filtering {self.filtering}, {kept}"


PRESETS: dict[str, NatModel] = {
    m.preset: m
    for m in (
        NatModel("full-cone", EIM, EIM, True),
        NatModel("restricted-cone", EIM, ADM, True),
        NatModel("port-restricted-cone", EIM, APDM, True),
        NatModel("symmetric", APDM, APDM, False),
    )
}
# `cone` was the only cone before the presets existed: MASQUERADE, a port-restricted cone.
ALIASES = {"cone": "port-restricted-cone"}
NONE = "none"
NAT_NAMES = (NONE, *PRESETS, *ALIASES)  # what a topology may write


def canonical(name: str) -> str:
    """The preset a topology's `nat:` names (an alias resolved); `none` stays `none`."""
    return ALIASES.get(name, name)


def model(name: str) -> NatModel:
    """The behaviour of a preset or alias; KeyError for `none` or an unknown name."""
    return PRESETS[canonical(name)]


def openness(name: str) -> int:
    """Lower is a better path out (to pick between a node's networks): full cone first."""
    order = (*PRESETS, NONE)
    return order.index(canonical(name)) if canonical(name) in order else len(order)
