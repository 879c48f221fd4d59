"""Telling a peer's LAN address from a NAT that defeats the punch (node/dcutr/addrs.lan_only)
and reading our on-link networks from the kernel's tables (node/dcutr/links.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from node.dcutr.addrs import Endpoint, endpoint_of, lan_only
from node.dcutr.links import on_link_networks

# a container on 172.21.0.0/24 behind its router, control network 172.30.0.0/24
ROUTE_V4 = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t110015AC\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000015AC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t00001EAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000012AC\t110015AC\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
ROUTE_V6 = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
    "00000000000000000000000000000001 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n"
)
LINKS = [ipaddress.ip_network("172.21.0.0/24"), ipaddress.ip_network("172.30.0.0/24")]


def ep(s: str) -> Endpoint:
    e = endpoint_of(s)
    assert e is not None
    return e


def test_links_are_the_routes_without_a_gateway(tmp_path: Path) -> None:
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    v4.write_text(ROUTE_V4)
    v6.write_text(ROUTE_V6)
    nets = on_link_networks(v4, v6)
    # not the default route, not 172.18.0.0/24 (via a gateway), not lo
    assert nets == [*LINKS, ipaddress.ip_network("fd00::/64")]


def test_links_unknown_without_the_ipv4_table(tmp_path: Path) -> None:
    assert on_link_networks(tmp_path / "missing", tmp_path / "missing6") is None


def test_links_of_this_process_include_a_real_network() -> None:
    nets = on_link_networks()
    assert nets is not None and nets, "a Linux host with an interface has a link route"


def test_peer_offering_only_its_own_lan_address_off_our_links() -> None:
    own = [ep("/ip4/172.20.0.10/tcp/27000"), ep("/ip4/10.0.0.3/tcp/27000")]
    assert lan_only([ep("/ip4/172.20.0.10/tcp/27000")], own, LINKS)


def test_a_router_public_address_is_not_the_peers_own() -> None:
    """The testnet's public network is private space too: the router's public IP is
    off our links and non-global, yet not one of the peer's own addresses."""
    own = [ep("/ip4/172.20.0.10/tcp/27000")]
    assert not lan_only([ep("/ip4/10.0.0.2/tcp/27000")], own, LINKS)
    assert not lan_only(
        [ep("/ip4/172.20.0.10/tcp/27000"), ep("/ip4/10.0.0.2/tcp/27000")], own, LINKS
    )


def test_an_address_on_our_link_global_or_loopback_is_reachable_enough() -> None:
    own = [
        ep("/ip4/172.21.0.15/tcp/4001"),
        ep("/ip4/8.8.4.4/tcp/4001"),
        ep("/ip4/127.0.0.1/tcp/4001"),
    ]
    assert not lan_only([ep("/ip4/172.21.0.15/tcp/4001")], own, LINKS)
    assert not lan_only([ep("/ip4/8.8.4.4/tcp/4001")], own, LINKS)
    assert not lan_only([ep("/ip4/127.0.0.1/tcp/4001")], own, LINKS)


def test_nothing_offered_or_links_unknown_is_not_lan_only() -> None:
    own = [ep("/ip4/172.20.0.10/tcp/27000")]
    assert not lan_only([], own, LINKS)
    assert not lan_only([ep("/ip4/172.20.0.10/tcp/27000")], own, None)
