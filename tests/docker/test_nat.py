"""The NAT routers with plain sockets, in the containers of a rendered testnet (mini.yaml).

No libp2p here: if these fail, no amount of relay or DCUtR code can work. What is shown:
a private node reaches the public network (source NATed to its router's public IP); the two
private networks cannot reach each other directly; unsolicited inbound to a router is
DROPPED (a timeout, not a RST); TCP simultaneous open from the listen port connects
through two cone routers and does not through two symmetric ones (switched at run time with
`sentrynet perturb nat`).
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.errors import SentrynetError
from harness.infra import docker as docker_ops
from harness.infra import netstate
from harness.model import Testnet, nat
from harness.run import natprobe, perturb
from harness.run.testnet import RunningTestnet
from harness.wait import wait_until

pytestmark = pytest.mark.docker

# Runs inside the containers (python3 of the node image): `serve` accepts one connection
# and answers; `dial` connects (optionally from a bound port, retrying until a deadline)
# and reports every error it saw by type, so a failure says HOW it failed.
PROBE = r"""
import json, os, socket, sys, time

def sock(bind):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if bind:
        s.bind(tuple(bind))
    return s

def serve(a):
    s = sock(a["bind"]); s.listen(4); s.settimeout(a["timeout"])
    try:
        c, peer = s.accept()
        c.settimeout(5); data = c.recv(100); c.sendall(b"pong:" + data)
        out = {"accepted": True, "peer": list(peer), "data": data.decode()}
    except OSError as e:
        out = {"accepted": False, "error": type(e).__name__}
    with open(a["out"] + ".tmp", "w") as f:
        json.dump(out, f)
    os.rename(a["out"] + ".tmp", a["out"])
    return out

def dial(a):
    end = time.monotonic() + a["deadline"]; attempts = 0; errors = {}
    while True:
        s = sock(a.get("bind")); s.settimeout(a["attempt_timeout"]); attempts += 1
        try:
            s.connect(tuple(a["to"]))
        except OSError as e:
            name = type(e).__name__ + (f"[{e.errno}]" if getattr(e, "errno", None) else "")
            errors[name] = errors.get(name, 0) + 1
            s.close()
            if time.monotonic() >= end or not a.get("retry"):
                return {"connected": False, "attempts": attempts, "errors": errors}
            continue
        s.settimeout(5)
        s.sendall(a["say"].encode())
        try:
            reply = s.recv(100).decode()
        except OSError as e:
            reply = type(e).__name__
        return {"connected": True, "attempts": attempts, "local": list(s.getsockname()),
                "peer": list(s.getpeername()), "reply": reply, "errors": errors}

print(json.dumps({"serve": serve, "dial": dial}[sys.argv[1]](json.loads(sys.argv[2]))))
"""


def run_probe(testnet: str, node: str, mode: str, **args: Any) -> dict[str, Any]:
    container = docker_ops.node_container(testnet, node)
    res = docker_ops.exec_in(container, ["python3", "-c", PROBE, mode, json.dumps(args)])
    lines = res.output.strip().splitlines()
    assert res.ok and lines, f"probe in {node} failed (exit {res.exit_code}): {res.output}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Server:
    """A one-shot TCP server in a container: started in the background, listening for sure
    before anyone dials it, its result read back from a file when it is done."""

    def __init__(self, testnet: str, node: str, bind: tuple[str, int], timeout: float) -> None:
        self.container = docker_ops.node_container(testnet, node)
        self.node, self.bind, self.timeout = node, bind, timeout
        self.out = f"/tmp/sn-probe-{bind[1]}.json"
        docker_ops.exec_in(self.container, ["rm", "-f", self.out])
        args = {"bind": list(bind), "timeout": timeout, "out": self.out}
        self.container.exec_run(["python3", "-c", PROBE, "serve", json.dumps(args)], detach=True)
        needle = f"{bind[0]}:{bind[1]}"

        def listening() -> tuple[bool, str]:
            res = docker_ops.exec_in(self.container, ["ss", "-ltnH"])
            return needle in res.output, res.output.strip()

        wait_until(
            listening,
            what=f"the probe server in {node} to listen on {needle}",
            deadline_s=60,
            likely_cause="python3 failed in the container, or the port is taken",
        )

    def result(self) -> dict[str, Any]:
        def done() -> tuple[bool, str]:
            res = docker_ops.exec_in(self.container, ["cat", self.out])
            return res.ok, res.output.strip()

        text = wait_until(
            done,
            what=f"the probe server in {self.node} to finish",
            deadline_s=self.timeout + 60,
            likely_cause="the probe server hung or crashed",
        )
        result: dict[str, Any] = json.loads(text)
        return result


def serve_and_dial(
    testnet: str, server: str, bind: tuple[str, int], client: str, **dial: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a one-shot server, dial it once it listens; return (server result, dial result).

    A failed dial is followed by the server's own timeout (it must have accepted nothing).
    """
    srv = Server(testnet, server, bind, timeout=dial["deadline"] + 5)
    dialed = run_probe(testnet, client, "dial", **dial)
    return srv.result(), dialed


def test_private_node_reaches_public_network_through_its_router(
    mini: RunningTestnet,
) -> None:
    tn = mini.testnet
    relay_ip = tn.node("relay").addresses["public"]
    served, dialed = serve_and_dial(
        tn.name,
        "relay",
        (relay_ip, 5101),
        "val-a",
        to=[relay_ip, 5101],
        deadline=10,
        attempt_timeout=10,
        retry=False,
        say="hi",
    )
    assert dialed["connected"] and dialed["reply"] == "pong:hi", dialed
    # the relay saw the router's public address, not the private one: SNAT happened
    assert served["peer"][0] == tn.router("router-a").public_ip, served


def test_private_networks_cannot_reach_each_other_directly(
    mini: RunningTestnet,
) -> None:
    tn = mini.testnet
    b_ip = tn.node("val-b").addresses["b"]
    served, dialed = serve_and_dial(
        tn.name,
        "val-b",
        (b_ip, 5102),
        "val-a",
        to=[b_ip, 5102],
        deadline=3,
        attempt_timeout=3,
        retry=False,
        say="hi",
    )
    assert not dialed["connected"], dialed
    assert not served["accepted"], f"val-b got a connection from val-a: {served}"
    # router-a has no route into b: the kernel answers "network unreachable" (or it times out)
    assert set(dialed["errors"]) <= {"OSError[101]", "OSError[113]", "TimeoutError"}, dialed


def test_unsolicited_inbound_is_dropped_not_rejected(mini: RunningTestnet) -> None:
    tn = mini.testnet
    a_ip = tn.node("val-a").addresses["a"]
    router_a = tn.router("router-a").public_ip
    # val-a listens on 5103; the relay dials router-a's public IP at that port
    served, dialed = serve_and_dial(
        tn.name,
        "val-a",
        (a_ip, 5103),
        "relay",
        to=[router_a, 5103],
        deadline=4,
        attempt_timeout=4,
        retry=False,
        say="hi",
    )
    assert not dialed["connected"], dialed
    # a timeout, never ConnectionRefused (a RST would kill a hole punch in flight)
    assert dialed["errors"] == {"TimeoutError": 1}, dialed
    assert not served["accepted"], f"val-a accepted unsolicited inbound: {served}"


def simultaneous_open(tn: Any, port: int, deadline: float) -> tuple[dict[str, Any], ...]:
    """val-a and val-b each dial the other's router public IP from their own listen port."""
    a_ip, b_ip = tn.node("val-a").addresses["a"], tn.node("val-b").addresses["b"]
    ra, rb = tn.router("router-a").public_ip, tn.router("router-b").public_ip
    common = {"deadline": deadline, "attempt_timeout": 1, "retry": True}
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(
            run_probe,
            tn.name,
            "val-a",
            "dial",
            bind=[a_ip, port],
            to=[rb, port],
            say="from-a",
            **common,
        )
        fb = pool.submit(
            run_probe,
            tn.name,
            "val-b",
            "dial",
            bind=[b_ip, port],
            to=[ra, port],
            say="from-b",
            **common,
        )
        return fa.result(timeout=deadline + 60), fb.result(timeout=deadline + 60)


def test_simultaneous_open_through_cone_and_symmetric_nat(
    mini: RunningTestnet,
) -> None:
    tn = mini.testnet
    # cone (the topology's NAT): the punch connects, ports preserved end to end
    a, b = simultaneous_open(tn, 5110, deadline=30)
    assert a["connected"] and b["connected"], (a, b)
    assert a["reply"] == "from-b" and b["reply"] == "from-a", (a, b)
    assert a["peer"] == [tn.router("router-b").public_ip, 5110], a
    assert b["peer"] == [tn.router("router-a").public_ip, 5110], b

    # symmetric (switched at run time): a new random port per mapping, the punch fails
    try:
        for net in ("a", "b"):
            perturb.set_nat(tn, net, "symmetric")
        a, b = simultaneous_open(tn, 5111, deadline=10)
        assert not a["connected"] and not b["connected"], (a, b)
        assert set(a["errors"]) == {"TimeoutError"}, a
    finally:
        for net in ("a", "b"):
            perturb.set_nat(tn, net, "cone")
    # and back to cone, it works again (the switch is reversible)
    a, b = simultaneous_open(tn, 5112, deadline=30)
    assert a["connected"] and b["connected"], (a, b)


def reaches_relay(tn: Any, port: int) -> dict[str, Any]:
    relay_ip = tn.node("relay").addresses["public"]
    _, dialed = serve_and_dial(
        tn.name,
        "relay",
        (relay_ip, port),
        "val-a",
        to=[relay_ip, port],
        deadline=4,
        attempt_timeout=4,
        retry=False,
        say="hi",
    )
    return dialed


def test_disconnect_and_partition_cut_traffic_and_undo_restores_it(
    mini: RunningTestnet,
) -> None:
    tn = mini.testnet
    try:
        perturb.disconnect(tn, "val-a", "a")
        cut = reaches_relay(tn, 5120)
        assert not cut["connected"], cut
        # the link is cut by iptables, not by removing it: address and default route remain
        c = docker_ops.node_container(tn.name, "val-a")
        assert tn.node("val-a").addresses["a"] in docker_ops.must_exec(c, ["ip", "-4", "addr"])
        assert "default via" in docker_ops.must_exec(c, ["ip", "-4", "route"])
    finally:
        perturb.reconnect(tn, "val-a", "a")
    assert reaches_relay(tn, 5121)["connected"]

    try:
        perturb.partition(tn, "a", "public")
        cut = reaches_relay(tn, 5122)
        assert not cut["connected"], cut
    finally:
        perturb.heal(tn, "a", "public")
    assert reaches_relay(tn, 5123)["connected"]


def test_partition_reaches_a_paused_node_and_a_node_started_during_it(
    mini: RunningTestnet,
) -> None:
    """A partition made while the relay is paused (docker exec refuses a frozen container:
    the rules go in from the host, in its namespaces) and while val-a is stopped (no
    namespace: nothing to cut now); val-a started during the partition gets the partition's
    rules in its new namespace, so it stays cut off; heal undoes all of it. (The chaos soak
    failed at this: `409 ... is not running`.)"""
    tn = mini.testnet
    relay = docker_ops.node_container(tn.name, "relay")
    try:
        perturb.container_action(tn, "val-a", "kill")
        perturb.container_action(tn, "relay", "pause")
        done = perturb.partition(tn, "a", "public")
        assert "val-a: not running" in done, done
        assert "relay: drop" in done, done
        perturb.container_action(tn, "relay", "unpause")
        assert "sn:partition:a:public" in docker_ops.must_exec(relay, ["iptables", "-S"])
        started = perturb.container_action(tn, "val-a", "start")
        assert "partition a | public kept: drop" in started, started
        cut = reaches_relay(tn, 5124)
        assert not cut["connected"], cut
    finally:
        with contextlib.suppress(SentrynetError):
            perturb.container_action(tn, "relay", "unpause")
        if docker_ops.node_container(tn.name, "val-a").status != "running":
            perturb.container_action(tn, "val-a", "start")
        perturb.heal(tn, "a", "public")
    assert reaches_relay(tn, 5125)["connected"]


def _observers(tn: Testnet) -> tuple[natprobe.Observer, natprobe.Observer]:
    """Two public addresses: the relay's, and router b's public side."""
    relay = natprobe.Observer(
        docker_ops.node_container(tn.name, "relay"), tn.node("relay").addresses["public"]
    )
    rb = tn.router_of("b")
    assert rb is not None
    rb_container = docker_ops.node_container(tn.name, rb.name)
    router_b = natprobe.Observer(rb_container, rb.public_ip, open_input=True)
    return relay, router_b


def test_router_nat_behaviour_is_measured_as_configured(mini: RunningTestnet) -> None:
    """RFC 4787 terms, probed as RFC 5780 does (UDP, two observers on two ports each), for
    every preset the topology offers, switched at run time on router-a: full cone
    (anyone gets in), restricted cone (an address val-a sent to gets in), port-restricted
    cone (`cone`, MASQUERADE: only the endpoint of the mapping), symmetric (MASQUERADE
    --random-fully: a mapping per destination). Fails when a router does something else."""
    tn = mini.testnet
    inside = docker_ops.node_container(tn.name, "val-a")
    ip = tn.node("val-a").addresses["a"]
    port_range = tn.node("val-a").port_range
    assert port_range is not None
    a, b = _observers(tn)
    seen = {}
    try:
        for i, preset in enumerate(nat.PRESETS):
            perturb.set_nat(tn, "a", preset)
            # from ports in val-a's own range: the cone filters DNAT exactly those
            seen[preset] = natprobe.classify(inside, ip, a, b, port=port_range[0] + 100 + 10 * i)
    finally:
        perturb.set_nat(tn, "a", "cone")
    for preset, got in seen.items():
        want = nat.model(preset)
        assert got.preset == preset, got.describe()
        assert got.filtering == want.filtering, got.describe()
        assert (got.mapping == nat.EIM) == (want.mapping == nat.EIM), got.describe()
        assert got.port_preserving == want.port_preserving, got.describe()


def test_full_cone_lets_a_public_dial_in_and_port_restricted_does_not(
    mini: RunningTestnet,
) -> None:
    """TCP through router-a's public address to a port of val-a's: a full cone delivers
    the relay's unsolicited SYN to val-a (from the relay's own address: no SNAT inbound);
    back to the port-restricted cone, the same SYN is dropped (a timeout, not a refusal)."""
    tn = mini.testnet
    port_range = tn.node("val-a").port_range
    assert port_range is not None
    port = port_range[0] + 200
    bind = (tn.node("val-a").addresses["a"], port)
    public = [tn.router("router-a").public_ip, port]
    relay_ip = tn.node("relay").addresses["public"]
    dial = {"to": public, "deadline": 4, "attempt_timeout": 4, "retry": False, "say": "in"}
    try:
        perturb.set_nat(tn, "a", "full-cone")
        srv, dialed = serve_and_dial(tn.name, "val-a", bind, "relay", **dial)
    finally:
        perturb.set_nat(tn, "a", "cone")
    assert dialed["connected"] and srv["accepted"], (srv, dialed)
    assert srv["peer"][0] == relay_ip, srv
    srv, dialed = serve_and_dial(tn.name, "val-a", bind, "relay", **dial)
    assert not dialed["connected"] and not srv["accepted"], (srv, dialed)
    assert dialed["errors"] == {"TimeoutError": 1}, dialed


UDP_ONCE = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.sendto(b'map', (sys.argv[3], int(sys.argv[4])))"
)


def _conntrack_rows(tn: Testnet, router: str, *needles: str) -> list[list[str]]:
    """The router's conntrack rows (split) that contain every needle."""
    table = netstate.read_proc_net(docker_ops.node_container(tn.name, router), "nf_conntrack")
    assert table.text is not None, table.error
    return [ln.split() for ln in table.text.splitlines() if all(n in ln for n in needles)]


def test_mapping_timeout_bounds_idle_mappings(mini: RunningTestnet) -> None:
    """mini.yaml gives router-b `mapping_timeout_s: 20`: a UDP mapping made from val-b
    starts with at most 20 s to live (the kernel's default is 30), val-b's TCP connection
    to the relay at most 20 (default 5 days), and the idle UDP mapping is gone within the
    timeout and a margin. Router-a keeps the kernel's defaults."""
    tn = mini.testnet
    port_range = tn.node("val-b").port_range
    assert port_range is not None
    port, relay_ip = port_range[0] + 300, tn.node("relay").addresses["public"]
    val_b = docker_ops.node_container(tn.name, "val-b")
    docker_ops.must_exec(
        val_b, ["python3", "-c", UDP_ONCE, tn.node("val-b").addresses["b"], str(port),
                relay_ip, "3490"]
    )  # fmt: skip
    needles = (" udp ", f"sport={port} ", f"dst={relay_ip} ")

    def tracked() -> tuple[bool, list[list[str]]]:
        rows = _conntrack_rows(tn, "router-b", *needles)
        return bool(rows), rows

    # the packet reaches router-b after val-b's link delay to the relay (mini.yaml links)
    udp = wait_until(
        tracked,
        what=f"router-b to track val-b:{port}'s UDP packet to the relay",
        deadline_s=10,
        likely_cause="the packet never left val-b (its delayer), or router-b did not NAT it",
    )
    assert 0 < int(udp[0][4]) <= 20, udp
    tcp = _conntrack_rows(tn, "router-b", " tcp ", "ESTABLISHED", f"dst={relay_ip} ")
    assert tcp and all(0 < int(r[4]) <= 20 for r in tcp), tcp
    tcp_a = _conntrack_rows(tn, "router-a", " tcp ", "ESTABLISHED", f"dst={relay_ip} ")
    assert tcp_a and all(int(r[4]) > 20 for r in tcp_a), tcp_a  # kernel default (5 days)

    def forgotten() -> tuple[bool, str]:
        rows = _conntrack_rows(tn, "router-b", " udp ", f"sport={port} ")
        return not rows, f"still tracked: {rows}"

    wait_until(
        forgotten,
        what=f"router-b to forget the idle UDP mapping of val-b:{port}",
        deadline_s=20 + 15,
        likely_cause="mapping_timeout_s did not reach the router's conntrack sysctls",
    )


def _through_forward(tn: Testnet, server: str, port: int, client: str, router: str) -> Any:
    """A one-shot server on `server`:`port`, dialed by `client` at `router`'s public
    address and the same port (mini.yaml forwards it); (server result, dial result)."""
    ip = tn.node(server).addresses[tn.router(router).network]
    return serve_and_dial(
        tn.name,
        server,
        (ip, port),
        client,
        to=[tn.router(router).public_ip, port],
        deadline=4,
        attempt_timeout=4,
        retry=False,
        say="via the forward",
    )


def test_port_forward_reaches_the_node_and_hairpins_only_where_set(
    mini: RunningTestnet,
) -> None:
    """mini.yaml: router-a forwards 6100 to val-a and hairpins it, router-b forwards 6200 to
    val-b without hairpin. From the public network both forwards reach their node with the
    dialer's own address as the source; from behind router-a its public address reaches
    val-a (here val-a itself) sourced from the router's public address (RFC 4787 REQ-9);
    behind router-b the same dial is refused by the router."""
    tn = mini.testnet
    relay_ip = tn.node("relay").addresses["public"]
    srv, dialed = _through_forward(tn, "val-a", 6100, "relay", "router-a")
    assert dialed["connected"] and srv["accepted"], (srv, dialed)
    assert srv["peer"][0] == relay_ip, srv
    srv, dialed = _through_forward(tn, "val-b", 6200, "relay", "router-b")
    assert dialed["connected"] and srv["peer"][0] == relay_ip, (srv, dialed)
    srv, dialed = _through_forward(tn, "val-a", 6100, "val-a", "router-a")
    assert dialed["connected"] and srv["accepted"], (srv, dialed)
    assert srv["peer"][0] == tn.router("router-a").public_ip, srv
    srv, dialed = _through_forward(tn, "val-b", 6200, "val-b", "router-b")
    assert not dialed["connected"] and not srv["accepted"], (srv, dialed)


TCP_RTT = r"""
import json, socket, statistics, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rtts = []
for _ in range(n):
    s = socket.socket(); s.settimeout(10)
    t0 = time.monotonic(); s.connect((ip, port)); rtts.append((time.monotonic() - t0) * 1000)
    s.close()
print(json.dumps({"median_ms": statistics.median(rtts), "all": rtts}))
"""


def _rtt_ms(tn: Testnet, node: str, ip: str, port: int) -> float:
    """Median TCP connect time (SYN to SYN-ACK) from `node` to ip:port, in ms."""
    c = docker_ops.node_container(tn.name, node)
    out = docker_ops.must_exec(c, ["python3", "-c", TCP_RTT, ip, str(port), "7"])
    return float(json.loads(out.strip().splitlines()[-1])["median_ms"])


def test_latency_shows_in_the_round_trip_with_or_without_netem(mini: RunningTestnet) -> None:
    """40 ms egress delay on every interface on the public network: val-a's TCP handshake
    with the relay crosses it twice (router-a's public side out, the relay's back), so
    the round trip grows by about 80 ms. With netem where the kernel has it, else with
    the NFQUEUE delayer (this project's CI kernel has no sch_netem); removing it brings the
    round trip back."""
    tn = mini.testnet
    relay = tn.node("relay")
    target = (relay.addresses["public"], relay.p2p_port)
    before = _rtt_ms(tn, "val-a", *target)
    try:
        said = perturb.set_latency(tn, "public", 40)
        delayed = _rtt_ms(tn, "val-a", *target)
    finally:
        perturb.set_latency(tn, "public", 0)
    after = _rtt_ms(tn, "val-a", *target)
    assert "netem" in said or "nfqueue" in said, said
    assert 70 <= delayed - before <= 80 + 150, (before, delayed, said)
    assert after < before + 30, (before, after)


def _rtts_ms(tn: Testnet, node: str, ip: str, port: int, n: int) -> list[float]:
    c = docker_ops.node_container(tn.name, node)
    out = docker_ops.must_exec(c, ["python3", "-c", TCP_RTT, ip, str(port), str(n)])
    return [float(x) for x in json.loads(out.strip().splitlines()[-1])["all"]]


def test_jitter_spreads_the_round_trip(mini: RunningTestnet) -> None:
    """40 +- 20 ms on every public interface: the handshake crosses two of them, so each
    round trip grows by 40..120 ms, no longer by one fixed amount."""
    tn = mini.testnet
    relay = tn.node("relay")
    target = (relay.addresses["public"], relay.p2p_port)
    base = sorted(_rtts_ms(tn, "val-a", *target, 7))[3]
    try:
        said = perturb.set_latency(tn, "public", 40, 20)
        rtts = _rtts_ms(tn, "val-a", *target, 15)
    finally:
        perturb.set_latency(tn, "public", 0)
    extra = [r - base for r in rtts]
    assert "+- 20 ms" in said, said
    assert min(extra) >= 35 and max(extra) <= 120 + 150, (base, rtts, said)
    assert max(rtts) - min(rtts) >= 15, (rtts, said)  # a fixed delay spreads by ~1 ms


def test_a_pair_link_delays_that_pair_only(mini: RunningTestnet) -> None:
    """mini.yaml links val-b and the relay with 30 ms each way (delayed as they leave
    each end, by the delayer in the mangle OUTPUT chain): val-b's round trip to the relay
    grows by about 60 ms through router-b; val-a's, through router-a, does not."""
    tn = mini.testnet
    relay = tn.node("relay")
    target = (relay.addresses["public"], relay.p2p_port)
    other = sorted(_rtts_ms(tn, "val-a", *target, 7))[3]
    linked = sorted(_rtts_ms(tn, "val-b", *target, 7))[3]
    assert linked - other >= 50, (other, linked)
    assert other < 40, other  # no delay on val-a's path


SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(2)
while True:
    c, _ = s.accept(); n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
"""

SEND = r"""
import json, socket, sys, time
s = socket.socket(); s.settimeout(60); s.connect((sys.argv[1], int(sys.argv[2])))
n = int(sys.argv[3]); t0 = time.monotonic()
s.sendall(b"x" * n); s.shutdown(socket.SHUT_WR)
got = int(s.recv(100) or 0); dt = time.monotonic() - t0
print(json.dumps({"bytes": got, "seconds": dt, "kbit_s": got * 8 / 1000 / dt}))
"""


def _throughput_kbit(tn: Testnet, node: str, ip: str, port: int, n: int) -> float:
    c = docker_ops.node_container(tn.name, node)
    out = json.loads(docker_ops.must_exec(c, ["python3", "-c", SEND, ip, str(port), str(n)]))
    assert out["bytes"] == n, out
    return float(out["kbit_s"])


def test_rate_limit_caps_throughput_and_goes_away(mini: RunningTestnet) -> None:
    """2000 kbit/s on every public interface: val-a's upload to the relay leaves through
    router-a's public side, so it takes at least 400 kB * 8 / 2000 kbit/s = 1.6 s; with
    the limit removed it is many times faster."""
    tn = mini.testnet
    relay = tn.node("relay")
    ip, port = relay.addresses["public"], 6300
    sink = docker_ops.node_container(tn.name, "relay")
    sink.exec_run(["timeout", "300", "python3", "-c", SINK, ip, str(port)], detach=True)
    wait_until(
        lambda: (
            f"{ip}:{port}" in docker_ops.exec_in(sink, ["ss", "-ltnH"]).output,
            "not listening yet",
        ),
        what="the sink in the relay to listen",
        deadline_s=30,
        likely_cause="python3 failed in the relay container, or port 6300 is taken",
    )
    try:
        said = perturb.set_rate(tn, "public", 2000)
        limited = _throughput_kbit(tn, "val-a", ip, port, 400_000)
        with_latency = perturb.set_latency(tn, "public", 20)  # the limit survives a delay
        delayed = _throughput_kbit(tn, "val-a", ip, port, 400_000)
    finally:
        perturb.set_latency(tn, "public", 0)
        removed = perturb.set_rate(tn, "public", 0)
    free = _throughput_kbit(tn, "val-a", ip, port, 4_000_000)
    assert "tbf" in said and "removed on" in removed, (said, removed)
    assert 1000 <= limited <= 2000 * 1.3, (limited, said)
    assert delayed <= 2000 * 1.3, (delayed, with_latency)
    assert free >= 10 * limited, (free, limited)


BUSY = r"""
import json, time
t0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - t0 < 3.0:
    pass
print(json.dumps({"cpu_per_wall": (time.process_time() - c0) / (time.monotonic() - t0)}))
"""


def _busy_share(tn: Testnet, node: str) -> float:
    c = docker_ops.node_container(tn.name, node)
    return float(json.loads(docker_ops.must_exec(c, ["python3", "-c", BUSY]))["cpu_per_wall"])


def test_cpu_cap_starves_a_node_and_clear_removes_it(mini: RunningTestnet) -> None:
    """`perturb cpu` caps the container's CFS quota: a busy loop inside gets about the cap
    (what partition-heal relies on); `clear` lifts it. Generous bounds: a process
    gets less than its cap when the machine is busy, never more."""
    tn = mini.testnet
    try:
        out = perturb.set_cpu(tn, "val-a", 0.1)
        assert "at most 0.1 CPU" in out
        capped = _busy_share(tn, "val-a")
        assert capped < 0.25, f"busy loop under a 0.1 CPU cap got {capped:.2f} CPU"
    finally:
        cleared = perturb.clear(tn)
    assert "CPU cap removed on val-a" in cleared
    free = _busy_share(tn, "val-a")
    assert free > 2 * capped, f"after clear the busy loop got {free:.2f} CPU (capped {capped:.2f})"
    with pytest.raises(SentrynetError, match="0 <= CORES"):
        perturb.set_cpu(tn, "val-a", -1)


def test_rebind_moves_the_model_and_the_pair_links_with_the_router(mini: RunningTestnet) -> None:
    """After `perturb rebind b` the model says router-b's new address (testnet.json, which
    later `sentrynet` commands load, included), and mini.yaml's val-b <-> relay link still
    delays both ways: the relay's rule matched val-b by router-b's old address and follows
    it. Without that the relay's half of the link vanished: about 30 ms instead of 60.
    Last in the module: it rebinds router-b back to its old address when done."""
    tn = mini.testnet
    old = tn.router("router-b").public_ip
    relay = tn.node("relay")
    target = (relay.addresses["public"], relay.p2p_port)
    rebound = perturb.rebind(tn, "b")
    try:
        mini.adopt(rebound.testnet)
        new = mini.testnet.router("router-b").public_ip
        assert new != old and f"{old} -> {new}" in rebound.said, rebound.said
        assert "pair links of relay follow it" in rebound.said, rebound.said
        loaded = RunningTestnet.find(tn.name).testnet
        assert loaded.router("router-b").public_ip == new
        assert loaded.network("b").router_public_ip == new
        assert [k.ip for k in loaded.node("relay").links] == [new]
        other = sorted(_rtts_ms(mini.testnet, "val-a", *target, 7))[3]
        linked = sorted(_rtts_ms(mini.testnet, "val-b", *target, 7))[3]
        assert linked - other >= 50, (other, linked, rebound.said)
    finally:
        back = perturb.rebind(mini.testnet, "b", old)
        mini.adopt(back.testnet)
    assert mini.testnet == tn
