"""Bad input: one kubectl-style line on stderr, exit 1, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from apis import Job

from .conftest import Site, hello_app, job_doc, manifest, write_yaml

JOB = "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: %s}\nspec: {app: %s, workdir: %s%s}\n"

# (id, manifest text appended after a good App and a good Job, what the message must say)
BAD_MANIFESTS = [
    ("malformed-yaml", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: [x\n", "invalid YAML: line"),
    ("tab-indent", "kind: Job\n\tmetadata: x\n", "invalid YAML"),
    ("duplicate-key", "kind: Job\nkind: App\n", "duplicate key"),
    ("unknown-kind", "apiVersion: balsam.io/v1\nkind: Pod\nmetadata: {name: x}\n",
     'no matches for kind "Pod" in version "balsam.io/v1"'),
    ("wrong-apiversion", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n",
     'no matches for kind "Job" in version "batch/v1"'),
    ("missing-kind", "apiVersion: balsam.io/v1\nmetadata: {name: x}\n", "Object 'Kind' is missing"),
    ("unknown-field", JOB % ("x", "hello", "w", ", color: red"), "spec.color: unknown field"),
    ("unknown-metadata-field", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x, nmae: y}\n"
     "spec: {app: hello, workdir: w}\n", "metadata.nmae: unknown field"),
    ("missing-required", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\nspec: {app: hello}\n",
     "spec.workdir: Required value"),
    ("missing-spec", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\n", "spec: Required value"),
    ("missing-name", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {}\nspec: {app: hello, workdir: w}\n",
     "metadata.name: Required value"),
    ("bad-name", JOB % ("Bad_Name", "hello", "w", ""), 'metadata.name: Invalid value: "Bad_Name"'),
    ("bad-label", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x, labels: {'a b': c}}\n"
     "spec: {app: hello, workdir: w}\n", "label key 'a b' is invalid"),
    ("absolute-workdir", JOB % ("x", "hello", "/tmp/escape", ""), 'spec.workdir: Invalid value: "/tmp/escape"'),
    ("dotdot-workdir", JOB % ("x", "hello", "a/../../escape", ""), "must stay inside the site's data/"),
    ("bad-type", JOB % ("x", "hello", "w", ", resources: {numNodes: lots}"), "spec.resources.numNodes"),
    ("zero-nodes", JOB % ("x", "hello", "w", ", resources: {numNodes: 0}"), "spec.resources.numNodes"),
    ("missing-parent", JOB % ("x", "hello", "w", ", parents: [ghost]"), 'spec.parents: Not found: "ghost"'),
    ("missing-app", JOB % ("x", "nope", "w", ""), 'spec.app: Not found: "nope"'),
    ("not-a-mapping", "- a\n- b\n", "expected an object"),
    ("alias", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: {name: x}\n"
     "spec: {app: hello, workdir: w, data: {a: &x [1], b: *x}}\n", "anchors and aliases"),
    ("python-tag", "apiVersion: balsam.io/v1\nkind: Job\nmetadata: !!python/object:os.system {name: x}\n",
     "invalid YAML"),
]


@pytest.mark.parametrize("text, expect", [pytest.param(t, e, id=i) for i, t, e in BAD_MANIFESTS])
def test_bad_manifest_apply(site: Site, tmp_path: Path, text: str, expect: str) -> None:
    good = write_yaml(tmp_path / "good.yaml", [hello_app(), job_doc("good", "w/good")]).read_text()
    f = tmp_path / "jobs.yaml"
    f.write_text(good + "---\n" + text)
    rev = site.revision()
    line = site.run("apply", "-f", str(f)).one_error()
    assert expect in line, line
    assert f"{f}: document 3" in line, line
    assert line.endswith("(no objects were applied)"), line
    assert site.revision() == rev
    assert site.registry().count(Job) == 0


QUOTED_APPS = [
    ("double-quotes", 'echo "{{ x }}"', "placeholder {{ x }} is inside double quotes"),
    ("single-quotes", "sh -c 'cat {{x}}'", "placeholder {{x}} is inside single quotes"),
    ("substitution", "echo $(cat {{ x }})", "placeholder {{ x }} is inside $( ... )"),
    ("backticks", "echo `cat {{ x }}`", "placeholder {{ x }} is inside backticks"),
]


@pytest.mark.parametrize("command, expect", [pytest.param(c, e, id=i) for i, c, e in QUOTED_APPS])
@pytest.mark.parametrize("verb", ["apply", "create"])
def test_a_placeholder_in_quotes_is_refused_with_the_safe_form(site: Site, tmp_path: Path, verb: str,
                                                               command: str, expect: str) -> None:
    f = write_yaml(tmp_path / "app.yaml", [manifest("App", "q", {"command": command, "parameters": {"x": {}}})])
    rev = site.revision()
    line = site.run(verb, "-f", str(f)).one_error()
    assert line.startswith('Error from server (Invalid): apps.balsam.io "q" is invalid: spec.command: '), line
    assert expect in line, line
    assert "write it as a bare word, e.g. 'echo {{" in line, line
    assert site.revision() == rev


@pytest.mark.parametrize("text, expect", [pytest.param(t, e, id=i) for i, t, e in BAD_MANIFESTS[:12]])
def test_bad_manifest_create_f(site: Site, tmp_path: Path, text: str, expect: str) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(write_yaml(tmp_path / "g.yaml", [hello_app()]).read_text() + "---\n" + text)
    rev = site.revision()
    line = site.run("create", "-f", str(f)).one_error()
    if "Required value" not in expect or "name" not in expect:  # create -f allows generateName only
        assert expect in line, line
    assert "(no objects were created)" in line
    assert site.revision() == rev


@pytest.fixture
def hello_site(site: Site, tmp_path: Path) -> Site:
    f = write_yaml(tmp_path / "base.yaml", [hello_app(), job_doc("parent", "w/p")])
    assert site.run("apply", "-f", str(f)).exit_code == 0
    return site


BAD_CREATE = [
    ("bad-name", ["--name", "Bad_Name"], 'metadata.name: Invalid value: "Bad_Name"'),
    ("absolute-workdir", ["-w", "/abs"], 'spec.workdir: Invalid value: "/abs"'),
    ("dotdot-workdir", ["-w", "../up"], "must stay inside the site's data/"),
    ("workdir-exactly-dotdot", ["-w", ".."], 'spec.workdir: Invalid value: "..": must stay inside'),
    ("workdir-in-and-back-out", ["-w", "a/../.."], 'spec.workdir: Invalid value: "a/../..": must stay inside'),
    ("workdir-empty", ["-w", ""], "spec.workdir: Required value"),
    ("missing-parent", ["--parent", "ghost"], 'spec.parents: Not found: "ghost"'),
    ("missing-app", ["--app", "nope"], 'spec.app: Not found: "nope"'),
    ("bad-param", ["-p", "novalue"], 'invalid --param "novalue": expected KEY=VALUE'),
    ("bad-tag", ["--tag", "x"], 'invalid --tag "x": expected KEY=VALUE'),
    ("bad-tag-key", ["--tag", "a b=c"], "label key 'a b' is invalid"),
    ("zero-nodes", ["--num-nodes", "0"], "--num-nodes"),
    ("not-a-number", ["--ranks-per-node", "many"], "--ranks-per-node"),
    ("unknown-flag", ["--colour", "red"], "No such option"),
]


@pytest.mark.parametrize("extra, expect", [pytest.param(a, e, id=i) for i, a, e in BAD_CREATE])
def test_bad_create_job(hello_site: Site, extra: list[str], expect: str) -> None:
    args = ["create", "job", "--app", "hello", "-w", "w/1", *extra]
    rev = hello_site.revision()
    line = hello_site.run(*args).one_error()
    assert expect in line, line
    assert hello_site.revision() == rev


def test_create_job_missing_required_flag(hello_site: Site) -> None:
    line = hello_site.run("create", "job", "--app", "hello").one_error()
    assert "Missing option '-w' / '--workdir'" in line


@pytest.mark.parametrize("selector", ["a in (b", "a notin b", "=x", "a,,b", "a=b,", "a b", "a!=(", "a in ()"])
def test_bad_selector(hello_site: Site, selector: str) -> None:
    line = hello_site.run("get", "jobs", "-l", selector).one_error()
    assert "unable to parse requirement" in line
    rev = hello_site.revision()
    hello_site.run("delete", "jobs", "-l", selector).one_error()
    assert hello_site.revision() == rev
    assert hello_site.registry().count(Job) == 1


@pytest.mark.parametrize("args, expect", [
    (["get", "pods"], 'the server doesn\'t have a resource type "pods"'),
    (["get", "jobs", "--state", "NAPPING"], "unknown job state 'NAPPING'"),
    (["get", "jobs", "-o", "xml"], 'unable to match a printer suitable for the output format "xml"'),
    (["get", "jobs", "-o", "jsonpath={.items[}"], "error parsing jsonpath"),
    (["get", "jobs", "--sort-by", "{.items[*]}"], "--sort-by"),
    (["get", "jobs", "--tag", "noequals"], 'invalid --tag "noequals"'),
    (["get", "apps", "--state", "RUNNING"], "--state does not apply to apps"),
    (["get"], "you must specify the type of resource"),
    (["describe", "job"], "you must specify the name"),
    (["delete", "jobs"], "no name, label selector, or --all flag specified"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["apply", "-f", "-", "-o", "wide"], "Invalid value for '-o' / '--output'"),
    (["create", "job", "-a", "hello", "-w", "w", "-o", "jsonpath={.x}"], "Invalid value for '-o' / '--output'"),
])
def test_bad_flags(hello_site: Site, args: list[str], expect: str) -> None:
    rev = hello_site.revision()
    line = hello_site.run(*args).one_error()
    assert expect in line, line
    assert hello_site.revision() == rev


@pytest.mark.parametrize("url, expect", [
    ("etcd://127.0.0.1:1", "cannot reach etcd at 127.0.0.1:1"),
    ("sqlite:///no/such/dir/store.db", "does not exist"),
    ("redis://localhost", "unsupported store URL"),
])
@pytest.mark.parametrize("cmd", [["get", "jobs"], ["create", "job", "--app", "hello", "-w", "w"],
                                 ["delete", "job", "x"], ["describe", "job", "x"]])
def test_unreachable_store(site: Site, url: str, expect: str, cmd: list[str]) -> None:
    rev = site.revision()
    line = site.run(*cmd, "--store", url).one_error()
    assert expect in line, line
    line = site.run(*cmd, env={"BALSAM_STORE": url}).one_error()
    assert expect in line, line
    assert site.revision() == rev


def test_unreachable_store_apply(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "a.yaml", [hello_app()])
    line = site.run("apply", "-f", str(f), "--store", "etcd://127.0.0.1:1").one_error()
    assert "cannot reach etcd" in line


def test_no_site_found(site: Site, nowhere_cwd: Path) -> None:
    from click.testing import CliRunner

    from kubectl_like.cli import cli

    r = CliRunner().invoke(cli, ["get", "jobs"], catch_exceptions=False)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "error: no site found: pass --site DIR, set BALSAM_SITE_PATH, or run inside a directory made by "
        "'balsamctl init'"
    ]
    r = CliRunner().invoke(cli, ["get", "jobs", "--site", str(nowhere_cwd)], catch_exceptions=False)
    assert r.exit_code == 1 and "is not a site directory" in r.stderr
    # --site pointing at the real site works from anywhere, before or after the command.
    assert CliRunner().invoke(cli, ["--site", str(site.path), "get", "sites"]).exit_code == 0
    assert CliRunner().invoke(cli, ["get", "sites", "--site", str(site.path)]).exit_code == 0


def test_apply_missing_file(site: Site) -> None:
    line = site.run("apply", "-f", "nope.yaml").one_error()
    assert line == 'error: the path "nope.yaml" does not exist'


def test_unexpected_exception_is_one_line(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import kubectl_like.commands.get as get_mod

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(get_mod, "query", boom)
    line = site.run("get", "jobs").one_error()
    assert line == "error: RuntimeError: kaboom; second line"


def test_unknown_kind_in_manifest_names_kind(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "x.yaml", [manifest("Deployment", "x", {})])
    line = site.run("apply", "-f", str(f)).one_error()
    assert 'no matches for kind "Deployment"' in line
