"""A busybox root filesystem for the cluster's clients to run (``shoal dev cluster`` imports it as busybox:latest)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def build_busybox_rootfs(dest: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """A minimal root filesystem from busybox-static: every applet in /bin, /etc/passwd and /etc/group."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    subprocess.run(["chroot", str(dest), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest
