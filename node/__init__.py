"""sentrynet relay node: the py-libp2p system under test that runs in every container."""

__version__ = "0.1.0"
