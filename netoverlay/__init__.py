"""Overlay networking between hosts (VXLAN, subnet leases, DNS, gossip)."""
