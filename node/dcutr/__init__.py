"""DCUtR (direct connection upgrade through relay): the hole-punch service (service.py), the
candidate addresses it offers and dials (addrs.py) and its wire format (wire.py)."""
