"""Loads rendered rulesets into nftables: one ``nft -f -`` transaction each (all or nothing)."""

from __future__ import annotations

import shutil
import subprocess

from shoal.netoverlay.nftrules import render_delete

NFT_TIMEOUT = 10.0


class NftError(RuntimeError):
    pass


def _nft() -> str:
    path = shutil.which("nft")
    if path is None:
        raise NftError("nft (the nftables package) is not installed: published ports and overlay isolation need it")
    return path


def load(text: str) -> None:
    """Apply ``text`` atomically; on failure nothing changed and the error says why."""
    res = subprocess.run([_nft(), "-f", "-"], input=text, capture_output=True, text=True, timeout=NFT_TIMEOUT)
    if res.returncode != 0:
        raise NftError(f"nft refused shoal's ruleset: {res.stderr.strip() or res.stdout.strip()}")


def remove() -> None:
    """Remove shoal's table (fine when there is none)."""
    load(render_delete())
