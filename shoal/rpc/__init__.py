"""gRPC transport carrying msgpack: generic handlers, a client, typed errors."""
