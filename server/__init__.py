"""The server: gRPC API, forwarding to the leader, and the leader's duties."""
