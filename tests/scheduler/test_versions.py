import pytest

from shoal.scheduler.versions import parse_constraint, parse_version, version_matches


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("1.2.3", ">= 1.2, < 2.0", True),
        ("2.0.0", ">= 1.2, < 2.0", False),
        ("1.1.9", ">= 1.2, < 2.0", False),
        ("v1.2", "= 1.2.0", True),
        ("1.2.3", "1.2.3", True),  # no operator means =
        ("1.2.3", "!= 1.2.3", False),
        ("1.10.0", "> 1.9", True),  # numeric, not lexical
        ("5.15.0.1", "> 5.15", True),  # more than three segments
        ("1.2.9", "~> 1.2.3", True),
        ("1.3.0", "~> 1.2.3", False),
        ("1.9", "~> 1.2", True),
        ("2.0", "~> 1.2", False),
        ("1.3.0-beta1", ">= 1.0", False),  # a pre-release does not meet a release term
        ("1.3.0-beta2", ">= 1.3.0-beta1", True),
        ("1.3.0-rc1", ">= 1.3.0-beta1", True),
        ("1.4.0-beta2", ">= 1.3.0-beta1", False),  # pre-release of other segments
        ("1.3.0+build5", "= 1.3.0", True),  # build metadata is ignored
        ("linux", ">= 1.0", False),
        ("1.2.3", "bogus", False),
        ("1.2.3", "", False),
    ],
)
def test_version_operator(version: str, constraint: str, expected: bool) -> None:
    assert version_matches(version, constraint) is expected


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("1.3.0-beta1", ">= 1.0", True),  # semver orders pre-releases below the release
        ("1.3.0-beta1", "< 1.3.0", True),
        ("1.3.0-alpha", "< 1.3.0-alpha.1", True),
        ("1.3.0-alpha.2", "< 1.3.0-alpha.10", True),  # numeric identifiers compare as numbers
        ("1.3.0-alpha.beta", "> 1.3.0-alpha.1", True),  # alphanumeric above numeric
        ("1.2.3", "~> 1.2", False),  # no pessimistic operator in semver
        ("1.2.3.4", ">= 1.0", False),  # at most three segments
        ("2.0.0", ">= 1.2.0, < 3", True),
    ],
)
def test_semver_operator(version: str, constraint: str, expected: bool) -> None:
    assert version_matches(version, constraint, semver=True) is expected


def test_parse_version_pads_and_keeps_parts() -> None:
    v = parse_version("v1.2-rc.1+abc")
    assert v is not None
    assert v.segments == (1, 2, 0)
    assert v.specified == 2
    assert v.prerelease == "rc.1"
    assert v.metadata == "abc"
    assert parse_version("one.two") is None


def test_parse_constraint_terms() -> None:
    c = parse_constraint(">= 1.2, < 2.0")
    assert c is not None
    assert [t.operator for t in c.terms] == [">=", "<"]
    assert parse_constraint(">= 1.2, nonsense here") is None
    assert parse_constraint("~> 1.2", semver=True) is None
