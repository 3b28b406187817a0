"""``shoal dev cluster``'s agent settings: checked before any host starts, then given to every server or client."""

from __future__ import annotations

import re

import pytest

from shoal.cli.dev import agent_flags
from shoal.cli.main import build_parser
from shoal.errors import UsageError


def flags(*argv: str) -> tuple[list[str], list[str]]:
    return agent_flags(build_parser().parse_args(["dev", "cluster", *argv]))


def test_defaults_add_no_flags():
    assert flags() == ([], [])


def test_settings_go_to_the_servers_or_the_clients():
    server, client = flags("--overlay-cidr", "10.99.0.0/16", "--min-dynamic-port", "23000",
                           "--max-dynamic-port", "23099", "--reserved-ports", "23000,23010-23012")
    assert server == ["--overlay-cidr", "10.99.0.0/16", "--overlay-subnet-prefix", "24"]
    assert client == ["--min-dynamic-port", "23000", "--max-dynamic-port", "23099",
                      "--reserved-ports", "23000,23010-23012"]
    # one bound alone keeps the other's default
    assert flags("--max-dynamic-port", "40000")[1] == ["--min-dynamic-port", "20000", "--max-dynamic-port", "40000"]


@pytest.mark.parametrize(("argv", "says"), [
    (["--min-dynamic-port", "80"], "--min-dynamic-port 80: must be between 1024 and 65535"),
    (["--min-dynamic-port", "33000"], "--min-dynamic-port 33000 is above --max-dynamic-port 32000"),
    (["--reserved-ports", "90-80"], "--reserved-ports '90-80': the range starts above its end"),
    (["--overlay-subnet-prefix", "12"], "overlay subnet prefix /12 must be longer than the overlay CIDR"),
    (["--overlay-cidr", "10.0.0.300/8"], "--overlay-cidr"),
])
def test_bad_settings_are_usage_errors_naming_the_flag(argv, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        flags(*argv)
