"""The safety audit's routes and listeners, read from each namespace's /proc tables
(harness/infra/netstate.py) instead of `ip -4 route` and `ss -ltn` by `docker exec`.

The samples were captured from a 64-node testnet: each container's /proc/net/route, tcp and
tcp6, and what `ip -4 route show` and `ss -ltnH` printed in it at the same moment. The
parsers must give the audit what the tools gave it; the tcp6 rows are written by hand (the
testnet has no IPv6 socket) and their hex worked out below. The judgement of a node's
listeners and a host's routes is tested on the parsed tables, without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.infra import netstate
from harness.infra.netstate import Table, TcpSocket
from harness.model.testnet import API_PORT, Testnet, build_testnet
from harness.model.topology import load_topology
from harness.run import audit

MINI = Path(__file__).resolve().parents[2] / "scenarios" / "mini.yaml"


@pytest.fixture(scope="module")
def mini() -> Testnet:
    return build_testnet(load_topology(MINI), "unit-mini")


def route_table(*rows: str) -> str:
    """A /proc/net/route text: the kernel's header, then `rows` (fields space-separated
    here, tab-separated and padded with spaces as the kernel writes them)."""
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
    return "\n".join(
        f"{line}{' ' * 40}" for line in [header, *("\t".join(r.split()) for r in rows)]
    )


TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)
TCP6_HEADER = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
)
TAIL = "00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0"

# container -> (/proc/net/route rows, `ip -4 route show`, /proc/net/tcp rows, `ss -ltnH`)
SAMPLES = {
    # a node behind router-p0 (default via its private IP), also on the control network
    "scale64-n08": (
        route_table(
            "eth0 00000000 FE0018AC 0003 0 0 0 00000000 0 0 0",
            "eth1 000BFA0A 00000000 0001 0 0 0 00FFFFFF 0 0 0",
            "eth0 000018AC 00000000 0001 0 0 0 00FFFFFF 0 0 0",
        ),
        "default via 172.24.0.254 dev eth0 \n"
        "10.250.11.0/24 dev eth1 proto kernel scope link src 10.250.11.18 \n"
        "172.24.0.0/24 dev eth0 proto kernel scope link src 172.24.0.11 \n",
        TCP_HEADER
        + f"   0: 0B00007F:A6C7 00000000:0000 0A {TAIL}\n"
        + f"   1: 120BFA0A:2328 00000000:0000 0A {TAIL}\n"
        + f"   2: 0B0018AC:0FA2 00000000:0000 0A {TAIL}\n"
        + f"   3: 0B0018AC:54CA 110018AC:0FA1 01 {TAIL}\n"
        + f"   4: 0B0018AC:0FA2 0D0018AC:5BF4 01 {TAIL}\n"
        + f"   5: 0B0018AC:5568 0B00630A:0FA1 01 {TAIL}\n",
        "LISTEN 0      4096     127.0.0.11:42695 0.0.0.0:*\n"
        "LISTEN 0      128    10.250.11.18:9000  0.0.0.0:*\n"
        "LISTEN 0      128     172.24.0.11:4002  0.0.0.0:*\n",
    ),
    # a sentry on the public and a private network: no default route
    "scale64-n56": (
        route_table(
            "eth2 0000630A 00000000 0001 0 0 0 00FFFFFF 0 0 0",
            "eth1 000BFA0A 00000000 0001 0 0 0 00FFFFFF 0 0 0",
            "eth0 000018AC 00000000 0001 0 0 0 00FFFFFF 0 0 0",
        ),
        "10.99.0.0/24 dev eth2 proto kernel scope link src 10.99.0.10 \n"
        "10.250.11.0/24 dev eth1 proto kernel scope link src 10.250.11.66 \n"
        "172.24.0.0/24 dev eth0 proto kernel scope link src 172.24.0.17 \n",
        TCP_HEADER
        + f"   0: 420BFA0A:2328 00000000:0000 0A {TAIL}\n"
        + f"   1: 0A00630A:0FA1 00000000:0000 0A {TAIL}\n"
        + f"   2: 110018AC:0FA1 00000000:0000 0A {TAIL}\n"
        + f"   3: 0B00007F:8335 00000000:0000 0A {TAIL}\n"
        + f"   4: 110018AC:0FA1 0D0018AC:5A26 01 {TAIL}\n"
        + f"   5: 0A00630A:0FA1 0C00630A:CA5C 06 {TAIL}\n"
        + f"   6: 420BFA0A:2328 010BFA0A:80CE 06 {TAIL}\n",
        "LISTEN 0      128    10.250.11.66:9000  0.0.0.0:*\n"
        "LISTEN 0      128      10.99.0.10:4001  0.0.0.0:*\n"
        "LISTEN 0      128     172.24.0.17:4001  0.0.0.0:*\n"
        "LISTEN 0      4096     127.0.0.11:33589 0.0.0.0:*\n",
    ),
    # a NAT router: no default route, only Docker's DNS listening
    "scale64-router-p0": (
        route_table(
            "eth1 0000630A 00000000 0001 0 0 0 00FFFFFF 0 0 0",
            "eth0 000018AC 00000000 0001 0 0 0 00FFFFFF 0 0 0",
        ),
        "10.99.0.0/24 dev eth1 proto kernel scope link src 10.99.0.254 \n"
        "172.24.0.0/24 dev eth0 proto kernel scope link src 172.24.0.254 \n",
        TCP_HEADER + f"   0: 0B00007F:A421 00000000:0000 0A {TAIL}\n",
        "LISTEN 0      4096   127.0.0.11:42017 0.0.0.0:*\n",
    ),
}
EMPTY_TCP6 = TCP6_HEADER  # every sample's tcp6: the header alone

# /proc/net/tcp6 addresses, worked out by hand: the 16 bytes in four 32-bit words, each
# printed as the little-endian host loads it (bytes reversed within the word)
V6_ANY = "00000000000000000000000000000000"  # ::
V6_LOOPBACK = "00000000000000000000000001000000"  # ::1 (last word 00 00 00 01)
# ::ffff:10.99.0.10: third word 00 00 ff ff -> FFFF0000, fourth 0a 63 00 0a -> 0A00630A
V6_MAPPED = "0000000000000000FFFF00000A00630A"
V6_LINK_LOCAL = "000080FE000000000000000001000000"  # fe80::1 (first word fe 80 00 00)
TCP6 = (
    TCP6_HEADER
    + f"   0: {V6_ANY}:0FA1 {V6_ANY}:0000 0A {TAIL}\n"
    + f"   1: {V6_LOOPBACK}:2328 {V6_ANY}:0000 0A {TAIL}\n"
    + f"   2: {V6_MAPPED}:0FA1 {V6_ANY}:0000 0A {TAIL}\n"
    + f"   3: {V6_LINK_LOCAL}:0FA2 {V6_MAPPED}:D0DE 01 {TAIL}\n"
    + "   4: 0A00630A:0FA1 00000000:0000 0A not an IPv6 row\n"
    + "   5: truncated\n"
)


def ss_listeners(text: str) -> set[tuple[str, int]]:
    """(address, port) of `ss -ltnH` lines, as the audit read them before."""
    out = set()
    for line in text.splitlines():
        host, _, port = line.split()[3].rpartition(":")
        out.add((host.strip("[]").split("%")[0], int(port)))
    return out


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize("container", sorted(SAMPLES))
def test_proc_route_gives_what_ip_route_gave(container: str) -> None:
    proc, iproute, _, _ = SAMPLES[container]

    def key(r: dict[str, str]) -> tuple[str, str | None, str | None]:
        return r["dest"], r.get("via"), r.get("dev")

    assert {key(r) for r in netstate.parse_proc_route(proc)} == {
        key(r) for r in audit.parse_routes(iproute)
    }


def test_proc_route_lines_read_like_ip_route() -> None:
    routes = netstate.parse_proc_route(SAMPLES["scale64-n08"][0])
    assert [r["line"] for r in routes] == [
        "default via 172.24.0.254 dev eth0",
        "10.250.11.0/24 dev eth1",
        "172.24.0.0/24 dev eth0",
    ]
    assert "via" not in routes[1]


def test_proc_route_skips_header_bad_rows_and_routes_that_are_not_up() -> None:
    text = route_table(
        "eth0 000018AC 00000000 0000 0 0 0 00FFFFFF 0 0 0",  # not RTF_UP
        "eth0 000018AC 00000000 0001 0 0 0 00FF00FF 0 0 0",  # mask not a prefix
        "eth0 XYZ 00000000 0001 0 0 0 00FFFFFF 0 0 0",
        "eth0 000018AC",
        "eth1 0100000A 0A0018AC 0007 0 0 100 FFFFFFFF 0 0 0",  # a host route, a metric
    )
    assert netstate.parse_proc_route(text) == [
        {
            "dest": "10.0.0.1/32",
            "dev": "eth1",
            "via": "172.24.0.10",
            "line": "10.0.0.1/32 via 172.24.0.10 dev eth1 metric 100",
        }
    ]


def test_a_route_with_no_device_is_no_default_route(mini: Testnet) -> None:
    """`ip route add unreachable default` shows as `unreachable default` (no via, not a
    default for the old parse); /proc/net/route shows it with Iface `*`: judged alike."""
    router = mini.router("router-a")
    proc = netstate.parse_proc_route(
        route_table(
            "* 00000000 00000000 0201 0 0 0 00000000 0 0 0",
            "* 0000000A 00000000 0001 0 0 0 000000FF 0 0 0",
        )
    )
    assert [r["line"] for r in proc] == ["reject default", "blackhole 10.0.0.0/8"]
    old = audit.parse_routes("unreachable default\nblackhole 10.0.0.0/8\n")
    assert audit.route_findings(router, proc, set()) == []
    assert audit.route_findings(router, old, set()) == []


def test_route_findings_on_proc_routes(mini: Testnet) -> None:
    val_a, router = mini.node("val-a"), mini.router("router-a")
    gateways = {net.gateway for net in mini.networks}
    ok = route_table(
        "eth0 00000000 FE011CAC 0003 0 0 0 00000000 0 0 0",  # default via 172.28.1.254
        "eth0 00011CAC 00000000 0001 0 0 0 00FFFFFF 0 0 0",
    )
    assert audit.route_findings(val_a, netstate.parse_proc_route(ok), gateways) == []
    docker_gw = route_table("eth0 00000000 01011CAC 0003 0 0 0 00000000 0 0 0")
    found = audit.route_findings(val_a, netstate.parse_proc_route(docker_gw), gateways)
    assert found == [
        "val-a: route via Docker gateway 172.28.1.1: 'default via 172.28.1.1 dev eth0' "
        "(a path off the testnet)",
        "val-a: default route(s) ['172.28.1.1']; expected exactly "
        "`default via 172.28.1.254` (its NAT router)",
    ]
    found = audit.route_findings(router, netstate.parse_proc_route(ok), gateways)
    assert found == [
        "router-a: has a default route ('default via 172.28.1.254 dev eth0'); "
        "routers must have none"
    ]


# --------------------------------------------------------------------------- listeners


@pytest.mark.parametrize("container", sorted(SAMPLES))
def test_tcp_listen_rows_are_what_ss_listed(container: str) -> None:
    _, _, tcp, ss = SAMPLES[container]
    listening, err = netstate.listening_on(Table(tcp), Table(EMPTY_TCP6))
    assert err is None and listening is not None
    assert sorted(listening) == sorted(ss_listeners(ss))
    assert len(listening) == len(ss.splitlines())


def test_tcp6_rows_parse_to_the_usual_text_form() -> None:
    rows = netstate.parse_proc_tcp6(TCP6)
    assert rows == [
        TcpSocket("::", 4001, "::", 0, "LISTEN"),
        TcpSocket("::1", 9000, "::", 0, "LISTEN"),
        TcpSocket("::ffff:10.99.0.10", 4001, "::", 0, "LISTEN"),
        TcpSocket("fe80::1", 4002, "::ffff:10.99.0.10", 53470, "ESTABLISHED"),
    ]
    assert netstate.parse_proc_tcp6(EMPTY_TCP6) == []


def test_tcp6_missing_is_no_socket_but_unreadable_is_an_error() -> None:
    tcp = Table(SAMPLES["scale64-router-p0"][2])
    missing = Table(None, "cannot read /proc/net/tcp6: no such file", missing=True)
    assert netstate.listening_on(tcp, missing) == ([("127.0.0.11", 42017)], None)
    denied = Table(None, "cannot read /proc/net/tcp6: Permission denied")
    assert netstate.listening_on(tcp, denied) == (None, denied.error)
    gone = Table(None, "cannot read /proc/net/tcp: container exited")
    assert netstate.listening_on(gone, missing) == (None, gone.error)
    both, err = netstate.listening_on(tcp, Table(TCP6))
    assert err is None and ("::", 4001) in (both or [])


def test_only_cats_no_such_file_counts_as_missing() -> None:
    assert netstate.cat_no_such_file(
        "cat: can't open '/proc/net/tcp6': No such file or directory", "tcp6"
    )
    assert netstate.cat_no_such_file("cat: /proc/net/tcp6: No such file or directory", "tcp6")
    assert not netstate.cat_no_such_file("cat: /proc/net/tcp6: Permission denied", "tcp6")
    assert not netstate.cat_no_such_file(
        'OCI runtime exec failed: exec: "cat": executable file not found in $PATH', "tcp6"
    )


def test_a_wildcard_ipv6_listener_is_a_finding(mini: Testnet) -> None:
    node = mini.node("val-a")  # data IP 172.28.1.10
    listening, _ = netstate.listening_on(Table(TCP_HEADER), Table(TCP6))
    assert listening is not None
    findings = audit.listener_findings(node, [(node.control_ip, API_PORT), *listening])
    assert findings == [
        "val-a: listens on wildcard :::4001 (reachable over the control network); "
        "listen on data IPs only",
        # the mapped address is stripped to 10.99.0.10: not val-a's; ::1 is loopback
        "val-a: listens on 10.99.0.10:4001, which is not one of its IPs",
    ]


def test_listener_findings_keep_their_judgement(mini: Testnet) -> None:
    node = mini.node("val-a")
    data_ip = node.addresses["a"]
    clean = [(data_ip, 4001), (f"::ffff:{data_ip}", 4002), ("127.0.0.11", 42017)]
    assert audit.listener_findings(node, [*clean, (node.control_ip, API_PORT)]) == []
    assert audit.listener_findings(node, [*clean, ("0.0.0.0", 4001), (data_ip, API_PORT)]) == [
        "val-a: listens on wildcard 0.0.0.0:4001 (reachable over the control network); "
        "listen on data IPs only",
        f"val-a: the API listens on data IP {data_ip}:{API_PORT}",
        f"val-a: no API listener on {node.control_ip}:{API_PORT} (its TCP tables)",
    ]
    assert audit.listener_findings(node, [(node.control_ip, 4001)])[0] == (
        f"val-a: listens on the control IP at {node.control_ip}:4001; only the API "
        f"(port {API_PORT}) may"
    )
