"""A server that cannot listen says so and exits 1 (instead of waiting for a leader forever)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from support.cluster import SHOAL, free_port


def test_raft_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    api, raft = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", raft))
        taken.listen()
        p = subprocess.run([SHOAL, "agent", "--server", "--data-dir", str(tmp_path), "--bind", f"127.0.0.1:{api}",
                            "--raft-bind", f"127.0.0.1:{raft}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert f"cannot listen for Raft on 127.0.0.1:{raft}: Address already in use" in p.stderr
    assert "Traceback" not in p.stderr
