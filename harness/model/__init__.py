"""The model: a topology manifest resolved into the testnet that runs. No Docker, no HTTP.

topology.py reads and validates the YAML; keys.py derives node keys; reach.py answers, from
the model alone, who reaches whom over IP; testnet.py resolves it all into `Testnet` (nodes,
networks, routers, with lookups) that every stage of a run takes.
"""

from harness.model.testnet import Network, Node, Router, Testnet, build_testnet
from harness.model.topology import Topology, load_topology

__all__ = ["Network", "Node", "Router", "Testnet", "Topology", "build_testnet", "load_topology"]
