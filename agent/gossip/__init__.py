"""Gossip among agents: SWIM with Lifeguard (a pure core in ``swim.py``), its messages, wire and keyring."""
