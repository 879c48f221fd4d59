"""The RFC 4787 classification from what the probes saw (harness/run/natprobe.py)."""

from __future__ import annotations

from harness.run.natprobe import NatBehaviour, filtering_of, mapping_of

A1, A2, B1 = ("100.64.0.1", 3478), ("100.64.0.1", 3479), ("100.64.0.2", 3478)


def test_mapping_kinds() -> None:
    same = [("100.64.0.9", 40000)] * 4
    assert mapping_of(same) == "endpoint-independent"
    per_addr = [("x", 1), ("x", 1), ("x", 2), ("x", 2)]
    assert mapping_of(per_addr) == "address-dependent"
    per_port = [("x", 1), ("x", 2), ("x", 3), ("x", 4)]
    assert mapping_of(per_port) == "address-and-port-dependent"


def test_filtering_kinds() -> None:
    assert filtering_of([B1, A2, A1], B1, A2) == "endpoint-independent"
    assert filtering_of([A2, A1], B1, A2) == "address-dependent"
    assert filtering_of([A1], B1, A2) == "address-and-port-dependent"


def test_presets() -> None:
    def nat(mapping: str, filtering: str) -> str:
        return NatBehaviour(mapping, filtering, True, (), ()).preset

    ei, ad, apd = "endpoint-independent", "address-dependent", "address-and-port-dependent"
    assert nat(ei, ei) == "full-cone"
    assert nat(ei, ad) == "restricted-cone"
    assert nat(ei, apd) == "port-restricted-cone"
    assert nat(apd, apd) == "symmetric"
    assert nat(ad, ei) == "symmetric"
