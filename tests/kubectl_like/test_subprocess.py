"""The installed ``balsamctl`` as a real process: exit codes, stdout, one-line stderr."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests._deadline import DEADLINE

from .conftest import Run, Site, balsamctl_bin, hello_app, job_doc, write_yaml


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None) -> Run:
    e = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    e.update(env or {})
    p = subprocess.run([balsamctl_bin(), *args], capture_output=True, text=True, cwd=cwd, env=e, input=input,
                       timeout=DEADLINE)
    return Run(p.returncode, p.stdout, p.stderr)


def test_tour_in_real_processes(tmp_path: Path) -> None:
    r = sh("init", "mysite", cwd=tmp_path)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "site.balsam.io/mysite created\n", "")
    site = tmp_path / "mysite"
    f = write_yaml(site / "jobs.yaml", [hello_app()] + [job_doc(f"t{n}", f"test/{n}", labels={"run": str(n)},
                                                                parameters={"name": f"w{n}"})
                                                        for n in range(3)])
    # The site is found from the current directory (and its children), as in Balsam.
    (site / "data" / "deep").mkdir()
    r = sh("apply", "-f", str(f), cwd=site / "data" / "deep")
    assert r.exit_code == 0 and r.stdout.count(" created\n") == 4 and r.stderr == ""
    r = sh("get", "jobs", "-o", "json", cwd=site)
    assert r.exit_code == 0 and [i["metadata"]["name"] for i in json.loads(r.stdout)["items"]] == ["t0", "t1", "t2"]
    r = sh("create", "job", "--app", "hello", "-w", "x/1", "--tag", "run=9", "--name", "made", cwd=site)
    assert r.stdout == "job.balsam.io/made created\n"
    r = sh("get", "jobs", "-l", "run in (1,9)", "-o", "jsonpath={.items[*].metadata.name}",
           cwd=tmp_path, env={"BALSAM_SITE_PATH": str(site)})
    assert r.stdout == "t1 made"
    r = sh("--site", str(site), "describe", "job", "t1", cwd=tmp_path)
    assert r.exit_code == 0 and "Events:" in r.stdout
    r = sh("delete", "job", "t1", "ghost", cwd=site)
    assert r.exit_code == 1
    assert r.stdout == 'job.balsam.io "t1" deleted\n'
    assert r.stderr == 'Error from server (NotFound): jobs.balsam.io "ghost" not found\n'
    r = sh("get", "jobs", "--state", "FAILED", cwd=site)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "No resources found in default namespace.\n")


@pytest.mark.parametrize("args, env, expect", [
    (["get", "jobs"], {}, "error: no site found"),
    (["get", "jobs", "--store", "etcd://127.0.0.1:1"], {}, "error: cannot reach etcd at 127.0.0.1:1"),
    (["get", "jobs"], {"BALSAM_STORE": "sqlite:///no/such/dir/s.db"}, "error: cannot open SQLite store"),
    (["get", "jobs", "--bogus"], {}, "error: No such option '--bogus'"),
    (["apply", "-f", "missing.yaml"], {}, 'error: the path "missing.yaml" does not exist'),
])
def test_errors_are_one_line_exit_1(tmp_path: Path, args: list[str], env: dict[str, str], expect: str) -> None:
    r = sh(*args, cwd=tmp_path, env=env)
    assert r.exit_code == 1, r
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(expect), r.stderr
    assert "Traceback" not in r.stderr


def test_bad_manifest_in_real_process_writes_nothing(site: Site, tmp_path: Path) -> None:
    docs = [hello_app()] + [job_doc(f"j{n}", f"w/{n}") for n in range(20)]
    docs[12] = job_doc("j11", "../../etc")
    f = write_yaml(tmp_path / "jobs.yaml", docs)
    rev = site.revision()
    r = site.sh("apply", "-f", str(f))
    line = r.one_error()
    assert line.startswith(f"error: {f}: document 13: ") and line.endswith("(no objects were applied)")
    assert site.revision() == rev
    r = site.sh("apply", "-f", "-", input="kind: [\n")
    assert r.one_error().startswith("error: STDIN: document 1: invalid YAML")


def test_help_and_version(tmp_path: Path) -> None:
    r = sh("--help", cwd=tmp_path)
    assert r.exit_code == 0 and "apply" in r.stdout and "get" in r.stdout
    r = sh("get", "--help", cwd=tmp_path)
    assert r.exit_code == 0 and "--selector" in r.stdout
    r = sh("--version", cwd=tmp_path)
    assert r.exit_code == 0 and "balsamctl" in r.stdout


def test_output_into_closed_pipe_is_quiet(site: Site, tmp_path: Path) -> None:
    f = write_yaml(tmp_path / "many.yaml", [hello_app()] + [job_doc(f"j{n}", f"w/{n}") for n in range(200)])
    assert site.run("apply", "-f", str(f)).exit_code == 0
    # ~300 KB of JSON into `head -1`: far more than a pipe buffer, so the write hits EPIPE.
    e = {k: v for k, v in os.environ.items() if not k.startswith("BALSAM_")}
    e["BALSAM_SITE_PATH"] = str(site.path)
    p = subprocess.run(["bash", "-c", f"'{balsamctl_bin()}' get jobs -o json | head -1"], capture_output=True,
                       text=True, env=e, timeout=DEADLINE)
    assert p.stdout == "{\n"
    assert p.stderr == ""


@pytest.mark.etcd
def test_real_process_against_etcd(tmp_path: Path, etcd_url: str) -> None:
    ns = "subproc-" + os.urandom(4).hex()
    r = sh("init", "s", "--store", etcd_url, "-n", ns, cwd=tmp_path)
    assert r.exit_code == 0, r.stderr
    site = tmp_path / "s"
    f = write_yaml(tmp_path / "j.yaml", [hello_app(), job_doc("e1", "w/e1")])
    assert sh("apply", "-f", str(f), cwd=site).stdout.splitlines()[-1] == "job.balsam.io/e1 created"
    r = sh("get", "job", "e1", "-o", "jsonpath={.metadata.namespace}", cwd=site)
    assert r.stdout == ns
