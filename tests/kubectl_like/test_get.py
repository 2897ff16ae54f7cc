"""balsamctl get: selectors, --state, --tag, every -o, --sort-by, --limit, -A, empty results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import store as st
from apis import BatchJob, HistoryEvent, Job, JobState, Node, Placement, set_condition, utcnow

from .conftest import Site, hello_app, job_doc, write_yaml

STATES = {0: "FAILED", 3: "FAILED", 5: "RUNNING", 7: "JOB_FINISHED"}


def seed_jobs(site: Site, tmp_path: Path) -> None:
    """The seed's 10 ``test/{n}`` jobs, tagged experiment/system/run, a few moved along."""
    docs: list[dict[str, Any]] = [hello_app()]
    for n in range(10):
        labels = {"experiment": "foo" if n < 6 else "bar", "system": "H2O" if n % 2 else "D2O", "run": str(n)}
        if n == 9:
            labels = {"experiment": "bar"}  # no system, no run
        docs.append(job_doc(f"test-{n}", f"test/{n}", labels=labels, priority=n % 4,
                            resources={"numNodes": 1 + n % 3}))
    f = write_yaml(tmp_path / "seed.yaml", docs)
    assert site.run("apply", "-f", str(f)).exit_code == 0
    reg = site.registry()
    for n, state in STATES.items():
        def move(j: Job, state: str = state) -> None:
            j.status.state = JobState(state)
            j.status.history.append(HistoryEvent.model_validate(
                {"from": "CREATED", "to": state, "time": utcnow(), "message": f"moved to {state}"}))
        reg.mutate(Job, f"test-{n}", move, site.namespace)


@pytest.fixture
def jobs_site(any_site: Site, tmp_path: Path) -> Site:
    seed_jobs(any_site, tmp_path)
    return any_site


def names(site: Site, *args: str) -> list[str]:
    r = site.run("get", "jobs", "-o", "name", *args)
    assert r.exit_code == 0, r.stderr
    return sorted(ln.split("/", 1)[1] for ln in r.stdout.splitlines())


def t(*ns: int) -> list[str]:
    return sorted(f"test-{n}" for n in ns)


@pytest.mark.parametrize("selector, expected", [
    ("experiment=foo", t(0, 1, 2, 3, 4, 5)),
    ("experiment==bar", t(6, 7, 8, 9)),
    ("experiment!=foo", t(6, 7, 8, 9)),
    ("system!=H2O", t(0, 2, 4, 6, 8, 9)),  # includes the job without the label, as Kubernetes does
    ("run in (1,3,5)", t(1, 3, 5)),
    ("run in (1, 3, nope)", t(1, 3)),
    ("system notin (H2O)", t(0, 2, 4, 6, 8, 9)),
    ("system", t(*range(9))),
    ("!system", t(9)),
    ("experiment=foo,system=H2O", t(1, 3, 5)),
    ("experiment=foo,system=H2O,run in (3,4)", t(3)),
    ("experiment=bar, !run", t(9)),
    ("experiment in (foo,bar),system notin (D2O),run", t(1, 3, 5, 7)),
    ("experiment=nope", []),
])
def test_label_selectors(jobs_site: Site, selector: str, expected: list[str]) -> None:
    assert names(jobs_site, "-l", selector) == expected
    assert names(jobs_site, f"--selector={selector}") == expected


def test_state_and_tag_filters(jobs_site: Site) -> None:
    assert names(jobs_site, "--state", "FAILED") == t(0, 3)
    assert names(jobs_site, "--state", "failed", "--state", "RUNNING") == t(0, 3, 5)
    assert names(jobs_site, "--state", "CREATED") == t(1, 2, 4, 6, 8, 9)
    assert names(jobs_site, "--tag", "experiment=foo") == t(*range(6))
    assert names(jobs_site, "--tag", "experiment=foo", "--tag", "system=D2O") == t(0, 2, 4)
    assert names(jobs_site, "--state", "FAILED", "--tag", "experiment=foo") == t(0, 3)
    assert names(jobs_site, "--state", "FAILED", "-l", "system=H2O") == t(3)
    assert names(jobs_site, "--state", "JOB_FINISHED", "-l", "experiment=foo") == []


def test_default_table(jobs_site: Site) -> None:
    r = jobs_site.run("get", "jobs")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "APP", "STATE", "WORKDIR", "AGE"]
    assert len(lines) == 11
    row = next(ln for ln in lines if ln.startswith("test-5 "))
    assert row.split()[:4] == ["test-5", "hello", "RUNNING", "test/5"]
    # kubectl's tabwriter look: columns start at the same offset on every line.
    starts = [ln.index("STATE") for ln in lines[:1]] + [ln.index(ln.split()[2]) for ln in lines[1:]]
    assert len(set(starts)) == 1
    r = jobs_site.run("get", "jobs", "--no-headers", "--state", "FAILED")
    assert [ln.split()[0] for ln in r.stdout.splitlines()] == ["test-0", "test-3"]


def test_wide_shows_nodes_priority_tags_and_unschedulable_reason(jobs_site: Site) -> None:
    reg = jobs_site.registry()

    def unschedulable(j: Job) -> None:
        set_condition(j.status.conditions, "Unschedulable", "True", "InsufficientGPUs",
                      "needs 8 GPUs per node; largest node has 4")

    def placed(j: Job) -> None:
        j.status.placement = Placement(nodes=["nid0001", "nid0002"], cpus=[0, 1])

    reg.mutate(Job, "test-2", unschedulable, jobs_site.namespace)
    reg.mutate(Job, "test-5", placed, jobs_site.namespace)
    r = jobs_site.run("get", "jobs", "-o", "wide")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "APP", "STATE", "WORKDIR", "AGE", "NODES", "PRIORITY", "TAGS",
                                "REASON", "MESSAGE"]
    row2 = next(ln for ln in lines if ln.startswith("test-2 "))
    assert "InsufficientGPUs" in row2 and row2.endswith("needs 8 GPUs per node; largest node has 4")
    assert "experiment=foo,run=2,system=D2O" in row2
    row5 = next(ln for ln in lines if ln.startswith("test-5 "))
    assert "nid0001,nid0002" in row5 and row5.split()[6] == "1"


def test_output_json_yaml_list_and_single(jobs_site: Site) -> None:
    data = json.loads(jobs_site.run("get", "jobs", "-o", "json", "--state", "FAILED").stdout)
    assert data["apiVersion"] == "v1" and data["kind"] == "List"
    assert [i["metadata"]["name"] for i in data["items"]] == ["test-0", "test-3"]
    assert data["items"][0]["status"]["state"] == "FAILED"
    one = json.loads(jobs_site.run("get", "job", "test-3", "-o", "json").stdout)
    assert one["kind"] == "Job" and one["metadata"]["name"] == "test-3"
    assert one["spec"]["resources"]["numNodes"] == 1
    y = YAML(typ="safe")
    lst = y.load(jobs_site.run("get", "jobs", "-o", "yaml", "-l", "run in (1,2)").stdout)
    assert lst["kind"] == "List" and [i["metadata"]["name"] for i in lst["items"]] == ["test-1", "test-2"]
    single = y.load(jobs_site.run("get", "job", "test-1", "-o", "yaml").stdout)
    assert single["kind"] == "Job" and single["metadata"]["labels"]["run"] == "1"
    two = y.load(jobs_site.run("get", "jobs", "test-1", "test-2", "-o", "yaml").stdout)
    assert two["kind"] == "List" and len(two["items"]) == 2
    # Empty: json/yaml still print an empty List.
    empty = json.loads(jobs_site.run("get", "jobs", "-o", "json", "-l", "experiment=none").stdout)
    assert empty == {"apiVersion": "v1", "kind": "List", "items": []}


def test_output_name_and_kind_slash_name(jobs_site: Site) -> None:
    r = jobs_site.run("get", "job/test-1", "job/test-2", "-o", "name")
    assert r.stdout == "job.balsam.io/test-1\njob.balsam.io/test-2\n"
    r = jobs_site.run("get", "j", "test-1", "-o", "name")  # short name
    assert r.stdout == "job.balsam.io/test-1\n"
    r = jobs_site.run("get", "jobs.balsam.io", "test-1", "-o", "name")
    assert r.stdout == "job.balsam.io/test-1\n"


def test_output_jsonpath_forms(jobs_site: Site) -> None:
    r = jobs_site.run("get", "job", "test-4", "-o", "jsonpath={.metadata.name}")
    assert r.stdout == "test-4"
    r = jobs_site.run("get", "jobs", "--state", "FAILED", "-o", "jsonpath={.items[*].metadata.name}")
    assert r.stdout == "test-0 test-3"
    r = jobs_site.run("get", "jobs", "-l", "experiment=foo,system=H2O",
                      "-o", 'jsonpath={range .items[*]}{.metadata.name}{"\\t"}{.status.state}{"\\n"}{end}')
    assert r.stdout == "test-1\tCREATED\ntest-3\tFAILED\ntest-5\tRUNNING\n"
    r = jobs_site.run("get", "jobs", "-o", "jsonpath={.items[?(@.status.state==\"RUNNING\")].spec.workdir}")
    assert r.stdout == "test/5"
    r = jobs_site.run("get", "job", "test-1", "-o", "jsonpath={.metadata.labels.experiment}/{.spec.resources}")
    assert r.stdout.startswith("foo/{") and '"numNodes":2' in r.stdout


def test_output_custom_columns(jobs_site: Site) -> None:
    r = jobs_site.run("get", "jobs", "--state", "FAILED",
                      "-o", "custom-columns=NAME:.metadata.name,STATE:.status.state,RUN:.metadata.labels.run")
    assert [ln.split() for ln in r.stdout.splitlines()] == [["NAME", "STATE", "RUN"], ["test-0", "FAILED", "0"],
                                                            ["test-3", "FAILED", "3"]]


def test_sort_by_and_limit(jobs_site: Site) -> None:
    def order(*args: str) -> list[str]:
        out = jobs_site.run("get", "jobs", "-o", "name", *args).stdout
        return [ln.split("/")[1] for ln in out.splitlines()]

    assert order("--sort-by", ".spec.priority")[:3] == ["test-0", "test-4", "test-8"]
    assert order("--sort-by", "{.spec.priority}")[-2:] == ["test-3", "test-7"]
    assert order("--sort-by", "-.spec.priority")[:2] == ["test-3", "test-7"]
    assert order("--sort-by", ".spec.resources.numNodes", "--limit", "4") == ["test-0", "test-3", "test-6",
                                                                              "test-9"]
    assert order("--sort-by", ".metadata.name", "--limit", "3") == ["test-0", "test-1", "test-2"]
    assert order("--sort-by", ".metadata.labels.run", "-l", "run")[:2] == ["test-0", "test-1"]
    assert len(order("--limit", "5")) == 5
    assert order("--limit", "0") == []
    assert order("--state", "FAILED", "--limit", "1") == ["test-0"]


def test_no_resources_found(jobs_site: Site) -> None:
    r = jobs_site.run("get", "jobs", "--state", "RUN_TIMEOUT")
    assert r.exit_code == 0 and r.stdout == ""
    assert r.stderr == f"No resources found in {jobs_site.namespace} namespace.\n"
    r = jobs_site.run("get", "batchjobs", "-n", "empty-ns")
    assert r.exit_code == 0 and r.stderr == "No resources found in empty-ns namespace.\n"
    r = jobs_site.run("get", "jobs", "-o", "name", "-l", "experiment=none")
    assert r.exit_code == 0 and r.stdout == "" and "No resources found" in r.stderr


def test_named_missing_objects(jobs_site: Site) -> None:
    r = jobs_site.run("get", "jobs", "test-1", "ghost", "-o", "name")
    assert r.exit_code == 1
    assert r.stdout == "job.balsam.io/test-1\n"
    assert r.stderr == 'Error from server (NotFound): jobs.balsam.io "ghost" not found\n'
    line = jobs_site.run("get", "job", "ghost").one_error()
    assert line == 'Error from server (NotFound): jobs.balsam.io "ghost" not found'
    line = jobs_site.run("get", "job", "test-1", "-l", "a=b").one_error()
    assert "cannot be combined with names" in line


def test_all_namespaces(site: Site, tmp_path: Path) -> None:
    # SQLite only: the session's etcd holds every other test's namespaces too.
    seed_jobs(site, tmp_path)
    jobs_site = site
    f = write_yaml(tmp_path / "o.yaml", [hello_app(), job_doc("other-1", "w/o")])
    assert jobs_site.run("apply", "-f", str(f), "-n", "zz-other").exit_code == 0
    r = jobs_site.run("get", "jobs", "-A")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    pairs = {tuple(ln.split()[:2]) for ln in lines[1:]}
    assert ("zz-other", "other-1") in pairs and (jobs_site.namespace, "test-0") in pairs
    assert len(lines) == 12
    r = jobs_site.run("get", "jobs", "-A", "-l", "experiment=bar", "--sort-by", ".metadata.name", "--limit", "2",
                      "-o", "name")
    assert r.stdout == "job.balsam.io/test-6\njob.balsam.io/test-7\n"
    assert jobs_site.run("get", "nodes", "-A").stderr == "No resources found\n"


def test_other_kinds_tables(site: Site) -> None:
    reg = site.registry()
    reg.create(BatchJob.model_validate({"metadata": {"name": "bj-1"}, "spec": {"numNodes": 4, "wallTimeMin": 30,
                                                                              "queue": "debug"}}))
    reg.create(Node.model_validate({"metadata": {"name": "nid0001"}, "spec": {"hostname": "nid0001", "cpus": 64,
                                                                             "gpus": 8, "batchJob": "bj-1"},
                                    "status": {"busyCpus": [0, 1], "busyGpus": [0], "occupancy": 0.5}}))
    r = site.run("get", "batchjobs")
    assert r.stdout.splitlines()[0].split() == ["NAME", "NODES", "WALLTIME", "STATE", "SCHEDULER-ID", "AGE"]
    assert r.stdout.splitlines()[1].split()[:5] == ["bj-1", "4", "30m", "pending_submission", "<none>"]
    assert "debug" in site.run("get", "bj", "-o", "wide").stdout
    r = site.run("get", "nodes")
    assert r.stdout.splitlines()[0].split() == ["NAME", "CPUS", "GPUS", "OCCUPANCY", "BATCHJOB", "AGE"]
    assert r.stdout.splitlines()[1].split()[:5] == ["nid0001", "2/64", "1/8", "0.50", "bj-1"]
    r = site.run("get", "batchjobs", "--state", "pending_submission", "-o", "name")
    assert r.stdout == "batchjob.balsam.io/bj-1\n"
    r = site.run("get", "sites", "-o", "name")
    assert r.stdout == "site.balsam.io/site\n"
    r = site.run("get", "apps")
    assert "No resources found" in r.stderr


class CountingStore:
    """A store proxy that records which object keys were read."""

    def __init__(self, inner: st.Store) -> None:
        self._inner = inner
        self.object_reads = 0

    def _note(self, kvs: Any) -> None:
        for kv in kvs:
            if kv is not None and kv.key.startswith("/registry/jobs/") and kv.value:
                self.object_reads += 1

    def get(self, key: str) -> Any:
        kv = self._inner.get(key)
        self._note([kv])
        return kv

    def get_many(self, keys: Any) -> Any:
        kvs = self._inner.get_many(keys)
        self._note(kvs)
        return kvs

    def range(self, prefix: str, *a: Any, **kw: Any) -> Any:
        res = self._inner.range(prefix, *a, **kw)
        self._note(res.kvs)
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CountingStore]]:
    opened: list[CountingStore] = []
    real = st.open_store

    def open_counting(url: str) -> Any:
        s = CountingStore(real(url))
        opened.append(s)
        return s

    monkeypatch.setattr(st, "open_store", open_counting)
    yield opened
    monkeypatch.setattr(st, "open_store", real)


def test_state_and_label_queries_read_only_matching_jobs(site: Site, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    docs: list[dict[str, Any]] = [hello_app()]
    docs += [job_doc(f"bulk-{n}", f"b/{n}", labels={"group": f"g{n % 20}", **({"rare": "yes"} if n < 3 else {})})
             for n in range(300)]
    assert site.run("apply", "-f", str(write_yaml(tmp_path / "bulk.yaml", docs))).exit_code == 0
    site.registry().mutate(Job, "bulk-7", lambda j: setattr(j.status, "state", JobState.FAILED))
    cases = [
        (["--state", "FAILED"], 1),
        (["-l", "group=g3"], 15),
        (["-l", "group in (g3,g4)"], 30),
        (["-l", "rare"], 3),
        (["-l", "group=g3,rare!=yes"], 15),
        (["--tag", "group=g1", "--state", "CREATED"], 15),
    ]
    for args, expected in cases:
        with counting(monkeypatch) as opened:
            r = site.run("get", "jobs", "-o", "name", *args)
        assert len(r.stdout.splitlines()) == expected, (args, r.stderr)
        reads = sum(s.object_reads for s in opened)
        # -o name reads none where the index decides alone (test_get_names.py), the matches otherwise
        assert reads <= expected, f"{args}: read {reads} job objects for {expected} matches"


def test_namespaces_skip_scan_handles_prefix_names(any_site: Site) -> None:
    """-A finds every namespace with one key read each, even when names prefix each other."""
    from apis import App
    from kubectl_like.query import namespaces_of

    reg = any_site.registry()
    tag = any_site.namespace  # unique per test on the shared etcd
    mine = [f"{tag}-a", f"{tag}-a-b", f"{tag}-a.b", f"{tag}-ab", f"{tag}-b"]
    for ns in mine:
        for n in range(3):
            reg.create(App.model_validate({"metadata": {"name": f"app-{n}", "namespace": ns},
                                           "spec": {"command": "true"}}))
    found = namespaces_of(reg, App)
    assert len(found) == len(set(found))
    assert [ns for ns in found if ns.startswith(tag + "-")] == sorted(mine)
