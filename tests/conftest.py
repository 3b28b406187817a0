"""Suite-wide settings, inherited by the servers the tests start as processes."""

import os

import pytest

# Every write a server submits as owned is checked to survive the codec exactly (raft/node.py).
os.environ.setdefault("SHOAL_CHECK_OWNED_WRITES", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests (marker ``slow``: scale tests, benches at small size) run only when asked for
    (``pytest -m slow tests/scheduler``)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a slow test: run it with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
