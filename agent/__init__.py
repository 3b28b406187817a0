"""The agent (client): fingerprints its host, runs allocations through drivers, reports back."""
