import pytest

from shoal.jobs.model import Constraint, Job
from shoal.jobs.structs import NODE_DOWN, NODE_INIT
from shoal.scheduler.feasible import (
    FILTER_DRAINING,
    FILTER_INELIGIBLE,
    FILTER_MISSING_DRIVERS,
    FILTER_NOT_READY,
    ConstraintChecker,
    DatacenterChecker,
    DistinctHostsChecker,
    DistinctPropertyChecker,
    DriverChecker,
    GroupFeasibility,
    NodePoolChecker,
    NodeStatusChecker,
    base_nodes,
    check_operator,
    constraint_name,
    job_plan_checkers,
    resolve_target,
)
from shoal.scheduler.usage import PlanUsage


@pytest.fixture()
def node(kit):
    return kit.node(
        "n1",
        datacenter="eu-west-1a",
        pool="gpu",
        node_class="large",
        attributes={"kernel.name": "linux", "cpu.arch": "amd64", "os.version": "22.04", "unique.hostname": "h1"},
        meta={"rack": "r7", "tags": "ssd, fast"},
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("${attr.kernel.name}", "linux"),
        ("${attr.unique.hostname}", "h1"),
        ("${node.datacenter}", "eu-west-1a"),
        ("${node.unique.name}", "name-n1"),
        ("${node.unique.id}", "n1"),
        ("${node.class}", "large"),
        ("${node.pool}", "gpu"),
        ("${meta.rack}", "r7"),
        ("${meta.absent}", None),
        ("${attr.absent}", None),
        ("${nonsense}", None),
        ("linux", "linux"),
    ],
)
def test_resolve_target(node, target, expected):
    assert resolve_target(target, node) == expected


@pytest.mark.parametrize(
    ("op", "lval", "rval", "expected"),
    [
        ("=", "linux", "linux", True),
        ("==", "linux", "darwin", False),
        ("is", None, "linux", False),
        ("!=", "linux", "darwin", True),
        ("not", "linux", "linux", False),
        ("!=", None, "linux", True),  # an unset attribute differs from any value
        ("<", "9", "10", True),  # numeric when both are numbers
        ("<", "a9", "a10", False),  # lexical otherwise
        ("<=", "10", "10.0", True),
        (">", "2.5", "10", False),
        (">=", "b", "a", True),
        (">", None, "1", False),
        ("regexp", "amd64", "^(amd|x86_)64$", True),
        ("regexp", "arm64", "^(amd|x86_)64$", False),
        ("regexp", "amd64", "md6", True),  # unanchored search, as Go's MatchString
        ("regexp", "amd64", "([", False),  # invalid pattern never matches
        ("set_contains", "a, b,c", "c,a", True),
        ("set_contains_all", "a,b", "a,z", False),
        ("set_contains_any", "a,b", "z, b", True),
        ("set_contains_any", "a,b", "y,z", False),
        ("version", "1.7.2", ">= 1.5, < 2", True),
        ("semver", "1.7.2-rc1", ">= 1.5", True),
        ("is_set", "x", None, True),
        ("is_set", None, None, False),
        ("is_not_set", None, None, True),
        ("is_not_set", "", None, False),
        ("frobnicate", "a", "a", False),  # unknown operators fail closed
    ],
)
def test_check_operator(op, lval, rval, expected):
    assert check_operator(op, lval, rval) is expected


def test_constraint_checker_and_name(node):
    c = ConstraintChecker(Constraint("${attr.kernel.name}", "=", "linux"))
    assert c.name == "${attr.kernel.name} = linux"
    assert c.feasible(node)
    assert not ConstraintChecker(Constraint("${meta.rack}", "=", "r8")).feasible(node)
    assert ConstraintChecker(Constraint("${meta.tags}", "set_contains", "ssd")).feasible(node)
    assert ConstraintChecker(Constraint("${attr.os.version}", "version", ">= 20.04")).feasible(node)
    assert ConstraintChecker(Constraint("${node.class}", "regexp", "^lar")).feasible(node)
    # both sides are targets
    assert ConstraintChecker(Constraint("${node.pool}", "=", "${meta.absent}")).feasible(node) is False
    assert constraint_name(Constraint("${attr.gpu}", "is_set", "")) == "${attr.gpu} is_set"


def test_node_status_checker(kit):
    checker = NodeStatusChecker()
    assert checker.reason(kit.node("a")) is None
    assert checker.reason(kit.node("b", status=NODE_DOWN)) == FILTER_NOT_READY
    assert checker.reason(kit.node("c", status=NODE_INIT)) == FILTER_NOT_READY
    assert checker.reason(kit.node("d", eligible=False)) == FILTER_INELIGIBLE
    assert checker.reason(kit.node("e", drain=True)) == FILTER_DRAINING
    assert not checker.feasible(kit.node("f", drain=True))


def test_datacenter_checker_globs(kit):
    checker = DatacenterChecker(["dc1", "eu-*"])
    assert checker.feasible(kit.node("a", datacenter="dc1"))
    assert checker.feasible(kit.node("b", datacenter="eu-west-1a"))
    assert not checker.feasible(kit.node("c", datacenter="us-east"))
    assert not checker.feasible(kit.node("d", datacenter="dc10"))
    assert DatacenterChecker(["*"]).feasible(kit.node("e", datacenter="anything"))
    assert checker.name == "datacenter not in [dc1, eu-*]"


def test_node_pool_checker(kit):
    assert NodePoolChecker("default").feasible(kit.node("a"))
    assert not NodePoolChecker("gpu").feasible(kit.node("a"))
    assert NodePoolChecker("all").feasible(kit.node("b", pool="gpu"))


def test_driver_checker(kit):
    checker = DriverChecker(frozenset({"docker"}))
    assert checker.name == FILTER_MISSING_DRIVERS
    assert checker.feasible(kit.node("a", drivers=["exec", "docker"]))
    assert not checker.feasible(kit.node("b", drivers=["exec"]))
    assert not DriverChecker(frozenset({"docker", "exec"})).feasible(kit.node("c", drivers=["docker"]))


def test_base_nodes_counts_why_nodes_were_left_out(kit):
    job = kit.job(datacenters=["dc1"], pool="default")
    nodes = [
        kit.node("ok1"),
        kit.node("ok2"),
        kit.node("down", status=NODE_DOWN),
        kit.node("drain", drain=True),
        kit.node("other-dc", datacenter="dc2"),
        kit.node("other-pool", pool="gpu"),
    ]
    base = base_nodes(job, nodes)
    assert sorted(n.id for n in base.nodes) == ["ok1", "ok2"]
    assert base.evaluated == 6
    assert base.filtered == {
        FILTER_NOT_READY: 1,
        FILTER_DRAINING: 1,
        "datacenter not in [dc1]": 1,
        "node pool not default": 1,
    }
    assert base.available == {"dc1": 2}


def test_group_feasibility_reports_first_failing_checker(kit):
    group = kit.group(driver="docker", constraints=[Constraint("${meta.rack}", "=", "r1")])
    job = kit.job("app", group, constraints=[Constraint("${attr.kernel.name}", "=", "linux")])
    usage = PlanUsage(kit.state())
    f = GroupFeasibility(job, group, usage)
    assert f.reason(kit.node("a", meta={"rack": "r1"})) is None
    assert f.reason(kit.node("b", meta={"rack": "r1"}, drivers=["exec"])) == FILTER_MISSING_DRIVERS
    assert f.reason(kit.node("c", meta={"rack": "r1"}, attributes={"kernel.name": "darwin"})) == (
        "${attr.kernel.name} = linux"
    )
    assert f.reason(kit.node("d", meta={"rack": "r2"})) == "${meta.rack} = r1"


def test_group_feasibility_caches_by_computed_class(kit, monkeypatch):
    group = kit.group(constraints=[Constraint("${attr.os.version}", "version", ">= 20.04")])
    job = kit.job("app", group)
    f = GroupFeasibility(job, group, PlanUsage(kit.state()))
    calls = []
    import shoal.scheduler.feasible as feasible

    real = feasible.check_operator

    def counting(op, l, r):
        calls.append((op, l, r))
        return real(op, l, r)

    monkeypatch.setattr(feasible, "check_operator", counting)
    nodes = [kit.node(f"n{i}", attributes={"os.version": "22.04" if i % 2 else "18.04"}) for i in range(10)]
    results = [f.feasible(n) for n in nodes]
    assert results == [bool(i % 2) for i in range(10)]
    assert len(calls) == 2  # one evaluation per distinct class, not per node


def test_unique_targets_escape_the_cache(kit):
    group = kit.group(constraints=[Constraint("${node.unique.name}", "regexp", "^name-a")])
    job = kit.job("app", group)
    f = GroupFeasibility(job, group, PlanUsage(kit.state()))
    assert f.feasible(kit.node("a1"))
    assert not f.feasible(kit.node("b1"))
    assert f._cache == {}


def test_distinct_hosts_job_and_group_level(kit):
    web, db = kit.group("web", count=2), kit.group("db", count=1)
    job = kit.job("app", web, db, constraints=[Constraint("", "distinct_hosts", "true")])
    existing = [kit.alloc(job, "db", 0, "n1")]
    usage = PlanUsage(kit.state(allocs=existing), existing)
    (checker,) = job_plan_checkers(job, usage)
    assert isinstance(checker, DistinctHostsChecker)
    assert not checker.feasible(kit.node("n1"))  # the job already runs there (other group)
    assert checker.feasible(kit.node("n2"))

    group_level = DistinctHostsChecker(usage, "web")
    assert group_level.feasible(kit.node("n1"))  # only "db" runs on n1


def test_distinct_hosts_false_is_ignored(kit):
    job = kit.job("app", constraints=[Constraint("", "distinct_hosts", "false")])
    assert job_plan_checkers(job, PlanUsage(kit.state())) == []


def test_distinct_property_limit(kit):
    checker = DistinctPropertyChecker.from_constraint(Constraint("${meta.rack}", "distinct_property", "2"), None)
    r1 = kit.node("a", meta={"rack": "r1"})
    assert checker.limit == 2
    assert checker.feasible(r1)
    checker.add(r1)
    assert checker.feasible(r1)
    checker.add(r1)
    assert not checker.feasible(r1)
    assert checker.feasible(kit.node("b", meta={"rack": "r2"}))
    assert not checker.feasible(kit.node("c"))  # no rack at all
    checker.remove(r1)
    assert checker.feasible(r1)
    assert checker.name == "distinct_property ${meta.rack}"
