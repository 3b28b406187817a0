"""``shoal agent``'s port flags: the dynamic range and reserved ports, checked before anything starts."""

from __future__ import annotations

import subprocess

import pytest
from support.cluster import SHOAL

from shoal.cli.main import build_parser
from shoal.jobs.structs import dynamic_range_error, parse_port_ranges


def test_port_ranges_parse_as_nomads():
    assert parse_port_ranges("") == []
    assert parse_port_ranges("22, 80,8000-8003,80") == [22, 80, 8000, 8001, 8002, 8003]
    assert parse_port_ranges("65535") == [65535]


@pytest.mark.parametrize(("text", "says"), [
    ("22,x", "'x' is not a port"), ("-5", "'-5' is not a port"), ("0", "ports are 1 to 65535"),
    ("80-70000", "ports are 1 to 65535"), ("90-80", "starts above its end"), ("1-2-3", "'1-2-3' is not a port"),
])
def test_malformed_port_ranges_say_which_part(text, says):
    with pytest.raises(ValueError, match=says):
        parse_port_ranges(text)


def test_dynamic_range_bounds():
    assert dynamic_range_error(20000, 32000) is None
    assert dynamic_range_error(1024, 1024) is None and dynamic_range_error(60000, 65535) is None
    assert dynamic_range_error(1023, 2000) == "min_dynamic_port 1023: must be between 1024 and 65535"
    assert dynamic_range_error(2000, 65536) == "max_dynamic_port 65536: must be between 1024 and 65535"
    assert dynamic_range_error(3000, 2000, ("--lo", "--hi")) == "--lo 3000 is above --hi 2000"


def test_the_flags_reach_the_parsed_arguments():
    args = build_parser().parse_args(["agent", "--client", "--reserved-ports", "22,8000-8001",
                                      "--min-dynamic-port", "30000", "--max-dynamic-port", "30010"])
    assert (args.reserved_ports, args.min_dynamic_port, args.max_dynamic_port) == ([22, 8000, 8001], 30000, 30010)
    defaults = build_parser().parse_args(["agent", "--client"])
    assert (defaults.reserved_ports, defaults.min_dynamic_port, defaults.max_dynamic_port) == ([], 20000, 32000)


@pytest.mark.parametrize(("flags", "says"), [
    (["--min-dynamic-port", "80"], "--min-dynamic-port 80: must be between 1024 and 65535"),
    (["--max-dynamic-port", "70000"], "--max-dynamic-port 70000: must be between 1024 and 65535"),
    (["--min-dynamic-port", "30000", "--max-dynamic-port", "25000"],
     "--min-dynamic-port 30000 is above --max-dynamic-port 25000"),
    (["--reserved-ports", "22,90-80"], "argument --reserved-ports: '90-80': the range starts above its end"),
])
def test_a_bad_port_flag_is_a_usage_error_naming_it(flags, says, tmp_path):
    p = subprocess.run([SHOAL, "agent", "--client", "--data-dir", str(tmp_path), *flags],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert says in p.stderr
