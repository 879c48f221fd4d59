"""Test and bench support: real node processes on loopback (procs) and chain helpers (chain).

Kept outside node/ so none of it ships in the node image.
"""
