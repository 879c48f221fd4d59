"""The chain workload: a small BFT chain over gossipsub plus a block-sync protocol.

It exists to give the testnet the traffic of the consensus network it imitates: consensus
messages that must cross networks through the sentries' gossip, and block sync that needs a
connection to one specific peer (direct, relayed, or upgraded by DCUtR).

Modules, one job each: block (data + signatures), codec (canonical bytes), store (sqlite),
consensus (pure Tendermint-like state machine), sync (wire protocol + range scheduler),
service (wires them to the node runtime).
"""
