"""Driver pieces that need neither root nor runc: overlay options, fingerprints, runc errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.agent import runc as runc_mod
from shoal.agent.drivers.container import ContainerDriver, _escape_overlay
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.agent.drivers.registry import build_drivers
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore


def test_overlay_option_escaping() -> None:
    assert _escape_overlay("/a,b:c\\d") == "/a\\,b\\:c\\\\d"


def test_fingerprint_needs_root_and_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImageManager(ImageStore(tmp_path / "store"))
    missing = ContainerDriver(store, state_dir=tmp_path / "state", runc_binary=str(tmp_path / "no-runc"))
    assert missing.fingerprint() is None
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert ContainerDriver(store, state_dir=tmp_path / "state").fingerprint() is None
    assert RawExecDriver().fingerprint() == {"driver.raw_exec": "1"}  # enabling it is the agent's decision


def test_registry_shapes(tmp_path: Path) -> None:
    store = ImageManager(ImageStore(tmp_path / "store"))
    drivers = build_drivers(store, raw_exec_enabled=False, runc_root=str(tmp_path / "runc"), state_dir=tmp_path / "s")
    assert sorted(drivers) == ["container", "docker", "exec"]
    container = drivers["docker"]
    assert isinstance(container, ContainerDriver) and container.runc.root == str(tmp_path / "runc")
    assert isinstance(build_drivers(store, raw_exec_enabled=True)["raw_exec"], RawExecDriver)


def test_runc_error_text(tmp_path: Path) -> None:
    log = tmp_path / "runc.log"
    log.write_text("\n".join([
        json.dumps({"level": "info", "msg": "starting"}),
        json.dumps({"level": "error", "msg": 'runc run failed: exec: "x": not found'}),
    ]))
    assert runc_mod._error_text(b"", log) == 'runc run failed: exec: "x": not found'
    text = b'time="2024" level=error msg="container \\"c1\\" does not exist"\n'
    assert runc_mod._error_text(text) == 'container "c1" does not exist'
    assert runc_mod._error_text(b"") == "no error output"


def test_runc_missing_binary_is_a_clear_error(tmp_path: Path, aio) -> None:
    from shoal.agent.drivers.base import DriverError

    r = runc_mod.Runc(str(tmp_path / "no-runc"))
    assert not r.available() and r.version_sync() is None
    with pytest.raises(DriverError, match="runc binary .* is not installed"):
        aio(r.state("x"))
