"""Suite-wide settings, inherited by the servers the tests start as processes."""

import os

# Every write a server submits as owned is checked to survive the codec exactly (raft/node.py).
os.environ.setdefault("SHOAL_CHECK_OWNED_WRITES", "1")
