"""``balsamctl completion bash|zsh|fish`` and what TAB completes (click's protocol, through
the real console script): kinds, object names from the store, job states, label keys."""

from __future__ import annotations

from .conftest import Site, hello_app, job_doc, write_yaml


def complete(site: Site, words: str, shell: str = "bash") -> list[str]:
    """What the shell would get for the last word of ``words`` (bash's protocol)."""
    parts = words.split(" ")
    env = {"_BALSAMCTL_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    r = site.sh(env=env)
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr
    return [ln.split(",", 1)[1] for ln in r.stdout.splitlines() if "," in ln]


def test_completion_scripts(site: Site) -> None:
    for shell in ("bash", "zsh", "fish"):
        r = site.run("completion", shell)
        assert r.exit_code == 0, r.stderr
        assert "_BALSAMCTL_COMPLETE" in r.stdout
    assert site.run("completion", "tcsh").one_error().startswith("error: Invalid value for '{bash|zsh|fish}'")


def test_completes_kinds_names_states_and_label_keys(site: Site) -> None:
    write_yaml(site.path / "j.yaml", [hello_app(), job_doc("alpha", labels={"experiment": "x"}),
                                      job_doc("alpine", labels={"sweep": "1"}), job_doc("beta")])
    assert site.run("apply", "-f", str(site.path / "j.yaml")).exit_code == 0
    assert complete(site, "balsamctl get jo") == ["job", "jobs"]
    assert "events" in complete(site, "balsamctl get ev")
    assert complete(site, "balsamctl describe job al") == ["alpha", "alpine"]
    assert complete(site, "balsamctl get job/b") == ["job/beta"]
    assert complete(site, "balsamctl delete jobs alpha al") == ["alpine"]  # not one already named
    assert complete(site, "balsamctl get apps ") == ["hello"]
    assert complete(site, "balsamctl get jobs --state RUN_") == ["RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT"]
    assert complete(site, "balsamctl get jobs -l ") == ["experiment=", "sweep="]
    assert complete(site, "balsamctl get jobs -l sweep=1,exp") == ["sweep=1,experiment="]
    assert complete(site, "balsamctl logs b") == ["beta"]
    assert complete(site, "balsamctl explain job.spec.res") == ["job.spec.resources"]


def test_completion_without_a_site_completes_names_to_nothing(site: Site, nowhere_cwd) -> None:
    env = {"_BALSAMCTL_COMPLETE": "bash_complete", "COMP_WORDS": "balsamctl get jobs a", "COMP_CWORD": "3",
           "BALSAM_SITE_PATH": str(nowhere_cwd / "missing")}
    r = site.sh(env=env, cwd=nowhere_cwd)
    assert r.exit_code == 0 and r.stdout.strip() == "" and "Traceback" not in r.stderr


def test_completes_the_new_verbs_and_field_selectors(site: Site) -> None:
    write_yaml(site.path / "j.yaml", [hello_app(), job_doc("alpha", labels={"experiment": "x"})])
    assert site.run("apply", "-f", str(site.path / "j.yaml")).exit_code == 0
    assert complete(site, "balsamctl re") == ["report", "retry"]
    assert complete(site, "balsamctl la") == ["label"]
    assert {"annotate", "patch"} <= set(complete(site, "balsamctl "))
    assert complete(site, "balsamctl label job al") == ["alpha"]
    assert complete(site, "balsamctl retry al") == ["alpha"]
    assert complete(site, "balsamctl get jobs --field-selector spec.") == ["spec.app=", "spec.site=", "spec.workdir="]
    assert complete(site, "balsamctl get jobs --field-selector status.state=RUN_") == \
        ["status.state=RUN_DONE", "status.state=RUN_ERROR", "status.state=RUN_TIMEOUT"]
    assert complete(site, "balsamctl get jobs --field-selector spec.app=a,status.state!=FA") == \
        ["spec.app=a,status.state!=FAILED"]
    assert complete(site, "balsamctl get apps --field-selector ") == ["metadata.name=", "metadata.namespace="]
    assert complete(site, "balsamctl label jobs --field-selector metadata.n") == ["metadata.name=", "metadata.namespace="]
