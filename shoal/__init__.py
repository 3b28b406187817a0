"""shoal: a small, fast container orchestrator (servers, scheduler, agents)."""

import os as _os

# The agent forks runc and other helpers from a process with live gRPC threads; gRPC's
# fork handlers then run in the child and can make it fail before exec. shoal never
# uses gRPC in a forked child, so turn fork support off before grpc is first imported.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
