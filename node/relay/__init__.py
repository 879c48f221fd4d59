"""Circuit relay v2 (hop server, reservation client, stop handler), on py-libp2p's protobufs."""
