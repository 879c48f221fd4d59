"""`sentrynet perturb ACTION ...`: break a running testnet on purpose, and undo it.

Containers: kill, pause, unpause, restart, start NODE. Links: disconnect/reconnect NODE NET
(iptables in the container; addresses and routes survive). Networks: partition/heal NET_A
NET_B; nat NET PRESET (full-cone, restricted-cone, port-restricted-cone or cone,
symmetric: the router's mapping and filtering, at run time); rebind NET [--ip IP] (a new
public address for NET's router, its mappings dropped); loss NET PCT;
latency NET MS (needs the kernel's netem; says so plainly where it is missing); clear
(undo every iptables perturbation). See harness/run/perturb.py for how each one works.
"""

from __future__ import annotations

import argparse

from harness.run import perturb
from harness.run.testnet import RunningTestnet

NAME = "perturb"
HELP = "kill/pause/restart nodes, disconnect links, partition networks, switch NAT, loss, latency"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t", "--testnet", help="testnet name (default: the only one running on this machine)"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    for action, text in (
        ("kill", "SIGKILL the node's container (start brings it back)"),
        ("pause", "freeze the container (cgroup freezer): packets to it go unanswered"),
        ("unpause", "thaw a paused container"),
        ("restart", "restart the container (setup script runs again; perturbation rules go)"),
        ("start", "start a killed or stopped container"),
    ):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("node", help="node or router name (e.g. node0, router-a)")
    for action, text in (
        ("disconnect", "drop everything on NODE's interface on NET (iptables; IP and routes kept)"),
        ("reconnect", "undo disconnect"),
    ):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("node")
        p.add_argument("net", help="data network name from the topology")
    for action, text in (
        ("partition", "no packet between NET_A and NET_B (also through NAT routers)"),
        ("heal", "undo partition"),
    ):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("net_a")
        p.add_argument("net_b")
    p = sub.add_parser("nat", help="switch a private network's router to another NAT preset")
    p.add_argument("net")
    p.add_argument("nat_type", choices=perturb.NAT_TYPES)
    p.add_argument(
        "--keep-conntrack",
        action="store_true",
        help="do not flush the router's conntrack table (old flows keep their old mapping)",
    )
    text = "give NET's router a new public address and drop its mappings (an ISP re-address)"
    p = sub.add_parser("rebind", help=text, description=text)
    p.add_argument("net")
    p.add_argument("--ip", help="the new address (default: a free one of the public subnet)")
    p = sub.add_parser("loss", help="random inbound packet loss on every interface on NET")
    p.add_argument("net")
    p.add_argument("pct", type=float, help="percent, 0 removes it")
    p = sub.add_parser(
        "latency", help="egress delay on every interface on NET (netem, else an NFQUEUE delayer)"
    )
    p.add_argument("net")
    p.add_argument("ms", type=float, help="milliseconds, 0 removes it")
    p.add_argument("--jitter", type=float, default=0.0, metavar="MS", help="+- MS per packet")
    p = sub.add_parser("rate", help="egress rate limit on every interface on NET (tc tbf)")
    p.add_argument("net")
    p.add_argument("kbit", type=int, help="kbit/s, 0 removes it")
    p = sub.add_parser("cpu", help="cap a node's container at CORES CPUs (docker update)")
    p.add_argument("node")
    p.add_argument("cores", type=float, help="CPUs, e.g. 0.2; 0 removes the cap")
    sub.add_parser("clear", help="undo every iptables perturbation and CPU cap in every container")


def run(args: argparse.Namespace) -> int:
    running = RunningTestnet.find(args.testnet)
    testnet = running.testnet
    a = args.action
    if a in ("kill", "pause", "unpause", "restart", "start"):
        out = perturb.container_action(testnet, args.node, a)
    elif a == "disconnect":
        out = perturb.disconnect(testnet, args.node, args.net)
    elif a == "reconnect":
        out = perturb.reconnect(testnet, args.node, args.net)
    elif a == "partition":
        out = perturb.partition(testnet, args.net_a, args.net_b)
    elif a == "heal":
        out = perturb.heal(testnet, args.net_a, args.net_b)
    elif a == "nat":
        out = perturb.set_nat(testnet, args.net, args.nat_type, flush=not args.keep_conntrack)
    elif a == "rebind":
        rebound = perturb.rebind(testnet, args.net, args.ip)
        running.adopt(rebound.testnet)  # testnet.json: later commands see the new address
        out = rebound.said
    elif a == "loss":
        out = perturb.set_loss(testnet, args.net, args.pct)
    elif a == "latency":
        out = perturb.set_latency(testnet, args.net, args.ms, args.jitter)
    elif a == "rate":
        out = perturb.set_rate(testnet, args.net, args.kbit)
    elif a == "cpu":
        out = perturb.set_cpu(testnet, args.node, args.cores)
    else:
        out = perturb.clear(testnet)
    print(out)
    return 0
