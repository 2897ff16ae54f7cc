"""The worked GitOps repository under manifests/gitops: its generated ensemble is up to date,
and the workflow of docs/gitops.md (apply --prune, re-apply, regenerate, diff, prune) works on
both stores."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from apis import App, Job, Site

from .conftest import Site as SiteFixture

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "manifests" / "gitops"
SELECTOR = "app.kubernetes.io/part-of=survey"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_ensemble", GITOPS / "gen_ensemble.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_ensemble_matches_its_generator() -> None:
    assert (GITOPS / "jobs" / "ensemble.yaml").read_text() == generator().render(), \
        "run: python manifests/gitops/gen_ensemble.py"


def checkout(tmp_path: Path, site: SiteFixture) -> Path:
    """A working copy of the example repository, its Site pointing at the test's site."""
    repo = tmp_path / "gitops"
    shutil.copytree(GITOPS, repo)
    site_yaml = repo / "site.yaml"
    site_yaml.write_text(site_yaml.read_text().replace("/srv/balsam/survey", str(site.path)))
    return repo


def test_gitops_workflow(any_site: SiteFixture, tmp_path: Path) -> None:
    site, ns = any_site, any_site.namespace
    repo = checkout(tmp_path, site)
    r = site.run("apply", "-R", "-f", str(repo), "--prune", "-l", SELECTOR)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 + 3 + 24 + 4 and all(ln.endswith(" created") for ln in lines)
    reg = site.registry()
    assert reg.get(Site, "survey", ns).spec.path == str(site.path)
    assert {a.name for a in reg.list(App, ns)[0]} == {"prepare", "simulate", "analyze"}
    assert reg.get(Job, "campaign-a-analyze", ns).spec.parents == ["campaign-a-low", "campaign-a-high"]

    # Nothing changed in git: diff says so, apply writes nothing.
    assert site.run("diff", "-R", "-f", str(repo), "--prune", "-l", SELECTOR).exit_code == 0
    rev = site.revision()
    r = site.run("apply", "-R", "-f", str(repo), "--prune", "-l", SELECTOR)
    assert r.exit_code == 0 and r.stdout.count(" unchanged") == 32 and site.revision() == rev

    # Shrink the sweep (two temperatures) and give the analysis a higher priority.
    generator().main(["-t", "300,325", "-o", str(repo / "jobs" / "ensemble.yaml")])
    dag = repo / "jobs" / "dag.yaml"
    dag.write_text(dag.read_text().replace("  priority: 10", "  priority: 20"))
    r = site.run("diff", "-R", "-f", str(repo), "--prune", "-l", SELECTOR)
    assert r.exit_code == 1
    assert "-  priority: 10\n+  priority: 20\n" in r.stdout
    assert r.stdout.count("--- live/balsam.io.v1.Job.") == 13  # 12 pruned jobs and the analysis
    r = site.run("apply", "-R", "-f", str(repo), "--prune", "-l", SELECTOR)
    assert r.exit_code == 0, r.stderr
    pruned = sorted(ln.split()[0] for ln in r.stdout.splitlines() if ln.endswith(" pruned"))
    assert pruned == sorted(f"job.balsam.io/sim-t{t}-s{s:02d}" for t in (350, 375) for s in range(6))
    assert "job.balsam.io/campaign-a-analyze configured" in r.stdout
    assert site.revision() == rev + 1  # the prunes and the update: one transaction
    assert len(reg.names(Job, ns)) == 12 + 4
    assert site.run("diff", "-R", "-f", str(repo), "--prune", "-l", SELECTOR).exit_code == 0
