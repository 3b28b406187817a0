from shoal.jobs.diff import diff_jobs
from shoal.jobs.model import Job, Resources, Task, TaskGroup


def job(count=1, image="busybox:1", memory=64, groups=("web",)) -> Job:
    return Job(id="j", groups=[
        TaskGroup(name=g, count=count, tasks=[Task(name="t", driver="container", config={"image": image},
                                                    resources=Resources(memory=memory))]) for g in groups])


def test_no_change_is_empty_and_server_fields_are_ignored():
    a, b = job(), job()
    b.version, b.modify_index = 3, 99
    assert diff_jobs(a, b) == []


def test_edits_name_the_group_and_task():
    changes = [str(c) for c in diff_jobs(job(), job(count=3, image="busybox:2"))]
    assert "~ group \"web\" count: 1 => 3" in changes
    assert "~ group \"web\" task \"t\" config.image: 'busybox:1' => 'busybox:2'" in changes


def test_added_and_removed_groups():
    changes = diff_jobs(job(groups=("web",)), job(groups=("api",)))
    assert {(c.kind, c.path) for c in changes} == {("added", 'group "api"'), ("deleted", 'group "web"')}


def test_a_new_job_is_all_added():
    assert all(c.kind == "added" for c in diff_jobs(None, job()))
