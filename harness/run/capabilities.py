"""What this machine's kernel can apply to a testnet, probed in a throwaway container.

Why: link conditions and NAT behaviours rest on kernel features a machine may lack (this
project's CI kernel has no sch_netem). A user should learn which conditions will really be
applied before a scenario depends on them, not from a test that fails an hour later.
`sentrynet capabilities` runs each mechanism once, for real, in a container of the node image
(network none, NET_ADMIN, the labels every sentrynet object carries, removed afterwards),
and reports per condition the mechanism that works here.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from harness.infra import delayer
from harness.infra import docker as docker_ops

CHECK_TESTNET = "sn-check"  # the sentrynet.testnet label of the probe container

# Each probe: name -> shell that exits 0 when the mechanism works (output kept as reason).
PROBES = {
    "netem": "tc qdisc add dev lo root netem delay 1ms && tc qdisc del dev lo root",
    "nfqueue": (
        f"timeout 3 python3 /tmp/sn_delayer.py {delayer.QUEUE_BASE + 99} 1 0 /tmp/d.pid "
        ">/tmp/d.log 2>&1; grep -q 'delayer: queue' /tmp/d.log || { cat /tmp/d.log; exit 1; }"
    ),
    "statistic": ("iptables -A OUTPUT -o lo -m statistic --mode random --probability 0.1 -j DROP"),
    "tbf": "tc qdisc add dev lo root tbf rate 1mbit burst 32kbit latency 400ms"
    " && tc qdisc del dev lo root",
    "masquerade": "iptables -t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully",
    "nft-sets": (
        "nft add table ip sncheck && nft add set ip sncheck s "
        "'{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }' && "
        "nft add map ip sncheck m '{ type inet_service : ipv4_addr; flags interval; }'"
    ),
}
TIMEOUT_SYSCTL = "net.netfilter.nf_conntrack_udp_timeout"


@dataclass(frozen=True)
class Condition:
    """A condition a topology or `perturb` can ask for, and how it is applied here."""

    name: str  # e.g. "latency (latency_ms, perturb latency)"
    mechanisms: tuple[tuple[str, bool, str], ...]  # (mechanism, works here, why not)
    offered: bool = True  # False: the kernel can, the topology format does not ask yet

    @property
    def available(self) -> bool:
        return any(ok for _, ok, _ in self.mechanisms)

    def to_json(self) -> dict[str, object]:
        return {
            "condition": self.name,
            "available": self.available,
            "offered": self.offered,
            "mechanisms": [
                {"how": m, "works": ok, "why_not": why} for m, ok, why in self.mechanisms
            ],
        }


def probe(image: str) -> list[Condition]:
    """Run every probe in one throwaway container of `image`; the conditions, in order."""
    client = docker_ops.client()
    labels = {"sentrynet.testnet": CHECK_TESTNET, "sentrynet.node": f"check-{os.getpid()}"}
    results: dict[str, tuple[bool, str]] = {}
    run = {
        "detach": True,
        "remove": True,
        "network_mode": "none",
        "cap_add": ["NET_ADMIN"],
        "labels": labels,
    }
    try:
        container = client.containers.run(
            image, ["sleep", "120"], sysctls={TIMEOUT_SYSCTL: "20"}, **run
        )
        timeouts = (True, "")
    except Exception as exc:  # the engine refused the sysctl: no per-namespace conntrack
        container = client.containers.run(image, ["sleep", "120"], **run)
        timeouts = (False, f"the engine refused sysctl {TIMEOUT_SYSCTL}: {exc}")
    try:
        docker_ops.put_file(container, "/tmp/sn_delayer.py", delayer.DELAYER)
        for name, script in PROBES.items():
            res = docker_ops.exec_in(container, ["sh", "-c", script])
            results[name] = (res.ok, "" if res.ok else res.output.strip()[-300:])
    finally:
        with contextlib.suppress(Exception):  # auto-removed already
            container.remove(force=True)
    return conditions(results, timeouts)


def conditions(results: dict[str, tuple[bool, str]], timeouts: tuple[bool, str]) -> list[Condition]:
    """The probe results read as conditions (a pure function: unit-tested)."""

    def m(how: str, key: str) -> tuple[str, bool, str]:
        ok, why = results.get(key, (False, "not probed"))
        return how, ok, why

    return [
        Condition(
            "latency, jitter (latency_ms, jitter_ms, perturb latency)",
            (m("tc netem", "netem"), m("NFQUEUE delayer", "nfqueue")),
        ),
        Condition("loss (loss_pct, perturb loss)", (m("iptables statistic", "statistic"),)),
        Condition(
            "NAT mapping (cones, symmetric)",
            (m("iptables MASQUERADE [--random-fully]", "masquerade"),),
        ),
        Condition(
            "cone filtering (full-cone, restricted-cone)",
            (m("nftables sets and maps", "nft-sets"),),
        ),
        Condition("mapping_timeout_s", (("conntrack sysctls per namespace", *timeouts),)),
        Condition("rate (rate_kbit, perturb rate)", (m("tc tbf", "tbf"),)),
    ]


def render(conds: list[Condition]) -> str:
    lines = [f"{'condition':<46} {'here':<5} how"]
    for c in conds:
        here = "yes" if c.available else "NO"
        shown = [
            f"{how}: {'works' if ok else 'no (' + (why or 'failed') + ')'}"
            for how, ok, why in c.mechanisms
        ]
        note = "" if c.offered else "  [not offered by the topology format yet]"
        lines.append(f"{c.name:<46} {here:<5} {shown[0]}{note}")
        lines += [f"{'':<52} {s}" for s in shown[1:]]
    return "\n".join(lines)


def to_json(conds: list[Condition]) -> str:
    return json.dumps([c.to_json() for c in conds], indent=2)


def missing(conds: list[Condition]) -> list[str]:
    """Offered conditions this machine cannot apply at all."""
    return [c.name for c in conds if c.offered and not c.available]
