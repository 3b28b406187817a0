"""agent/names.py: every host name of a task is safe where it is used and distinct for distinct tasks."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from shoal.agent import names

ALLOC = "0b5c11d2-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
AWKWARD = ["web", "web server", "web_server", "web.v2", "..", ".", "../x", "a/b", "a_b", "ünïcode", "unicode",
           "日本", "__", "alloc", "state.msgpack", ".hidden", "x+1", "x_1", "-dash", "a" * 200, "a" * 201, ""]
RUNC_ID = re.compile(r"^[\w+.-]+$", re.ASCII)  # runc's own check of container ids


def test_plain_names_are_kept() -> None:
    assert names.component("web") == "web"
    assert names.component("web.v2") == "web.v2"
    assert names.task_dir(Path("/a"), "web") == Path("/a/web")
    assert names.container_id(ALLOC, "web") == f"shoal-{ALLOC}-web"
    assert names.cgroup_path(names.container_id(ALLOC, "web")) == f"/shoal/shoal-{ALLOC}-web"
    assert names.log_files(Path("/a"), "web") == (Path("/a/alloc/logs/web.stdout.0"), Path("/a/alloc/logs/web.stderr.0"))


def test_replaced_characters_add_a_hash_so_names_never_collide() -> None:
    spaced, underscored = names.component("web server"), names.component("web_server")
    assert underscored == "web_server" and spaced.startswith("web_server+") and spaced != underscored
    assert names.component("ünïcode").startswith("_n_code+")
    components = [names.component(n) for n in AWKWARD]
    assert len(set(components)) == len(AWKWARD)
    ids = [names.container_id(ALLOC, n) for n in AWKWARD]
    assert len(set(ids)) == len(AWKWARD)
    task_dirs = {names.task_dir(Path("/a"), n) for n in AWKWARD}
    assert len(task_dirs) == len(AWKWARD)


def test_every_name_is_one_safe_path_component() -> None:
    alloc_dir = Path("/data/allocs") / ALLOC
    for name in AWKWARD:
        c = names.component(name)
        assert "/" not in c and c not in (".", "..", "") and not c.startswith(".") and len(c) <= 128, name
        d = names.task_dir(alloc_dir, name)
        assert d.parent == alloc_dir and d.name not in (names.SHARED_DIR, names.STATE_FILE), name
        for log in names.log_files(alloc_dir, name):
            assert log.parent == names.logs_dir(alloc_dir), name
        cid = names.container_id(ALLOC, name)
        assert RUNC_ID.match(cid) and len(cid) < 200, name
        assert names.cgroup_path(cid).count("/") == 2, name
    assert names.alloc_dir(Path("/data/allocs"), "../../etc").parent == Path("/data/allocs")


def test_container_ids_are_distinct_over_allocation_and_task_pairs() -> None:
    allocs = [ALLOC, ALLOC.replace("0", "1"), "a", "a-b", "a b", ALLOC + "-x", ""]
    tasks = ["b", "b-c", "x-web", "web", "web server", "c", ""]
    pairs = list(itertools.product(allocs, tasks))
    assert len({names.container_id(a, t) for a, t in pairs}) == len(pairs)
    # the split after a UUID is unambiguous; anything else carries a hash of the exact pair
    assert names.container_id("a", "b-c") != names.container_id("a-b", "c")
    assert names.container_id(ALLOC + "-x", "web") != names.container_id(ALLOC, "x-web")
