"""The generated CRDs: committed files up to date, Kubernetes' structural-schema rules, and
objects of every kind (spec as users write it, status as the store holds it) valid under them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from apis import KINDS, App, Job, JobState, Registry
from kubectl_like import crds

from .conftest import Site, hello_app, job_doc, write_yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "manifests" / "crds"


def test_committed_crds_are_up_to_date() -> None:
    """Fails when a model changed and `balsamctl crds -d manifests/crds` was not run."""
    want = crds.rendered_files()
    have = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert sorted(have) == sorted(want), "run: balsamctl crds -d manifests/crds"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, f"stale CRDs {stale}: run `balsamctl crds -d manifests/crds` and commit the result"


def test_crds_command_check_and_write(site: Site, tmp_path: Path) -> None:
    r = site.run("crds", "-d", str(CRD_DIR), "--check")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "crds"
    r = site.run("crds", "-d", str(out))
    assert r.exit_code == 0 and r.stdout.count(" written") == len(KINDS)
    assert site.run("crds", "-d", str(out)).stdout.count(" unchanged") == len(KINDS)
    (out / "jobs.balsam.io.yaml").write_text("stale\n")
    line = site.run("crds", "-d", str(out), "--check").one_error()
    assert "jobs.balsam.io.yaml" in line and "out of date" in line
    docs = list(YAML(typ="safe").load_all(site.run("crds").stdout))
    assert [d["metadata"]["name"] for d in docs] == [f"{k.PLURAL}.balsam.io" for k in KINDS]


def _walk_structural(node: dict[str, Any], path: str) -> None:
    """Kubernetes' structural schema rules (apiextensions v1), the ones a generator can break."""
    assert isinstance(node, dict), path
    for bad in ("$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "not", "const", "title", "default"):
        assert bad not in node, f"{path}: {bad} is not allowed"
    if not (node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")):
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), f"{path}: no type"
    if "properties" in node:
        assert "additionalProperties" not in node, f"{path}: properties and additionalProperties together"
    assert node.get("additionalProperties") is not False, f"{path}: additionalProperties: false"
    if "exclusiveMinimum" in node:
        assert node["exclusiveMinimum"] is True and "minimum" in node, path
    for k, sub in (node.get("properties") or {}).items():
        _walk_structural(sub, f"{path}.{k}")
    if isinstance(node.get("additionalProperties"), dict):
        _walk_structural(node["additionalProperties"], f"{path}.*")
    if node.get("type") == "array":
        _walk_structural(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_crd_is_structural_with_status_and_columns(kind: type) -> None:
    c = crds.crd(kind)
    assert c["metadata"]["name"] == f"{kind.PLURAL}.balsam.io"
    (version,) = c["spec"]["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    _walk_structural(schema, "")
    assert schema["properties"]["metadata"] == {"type": "object"}
    cols = {col["name"]: col["jsonPath"] for col in version["additionalPrinterColumns"]}
    assert cols["Age"] == ".metadata.creationTimestamp"
    if kind is Job:
        assert cols["State"] == ".status.state" and cols["App"] == ".spec.app"
        assert schema["properties"]["spec"]["properties"]["data"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "no" not in c["spec"]["names"].get("shortNames", [])  # core nodes keep "no"


# --- a small OpenAPI v3 validator (the subset the CRDs use), to check real objects ----------


def _valid(value: Any, node: dict[str, Any], path: str) -> list[str]:
    if value is None:
        return [] if node.get("nullable") else [f"{path}: null"]
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        return []
    if node.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) and not isinstance(value, bool) else [f"{path}: int-or-string"]
    t = node.get("type")
    ok = {"object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
          "boolean": isinstance(value, bool),
          "integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool)}[t]
    if not ok:
        return [f"{path}: expected {t}, got {type(value).__name__}"]
    errs: list[str] = []
    if "enum" in node and value not in node["enum"]:
        errs.append(f"{path}: {value!r} not in enum")
    if "minimum" in node and value < node["minimum"]:
        errs.append(f"{path}: below minimum")
    if t == "object":
        props = node.get("properties") or {}
        errs += [f"{path}.{k}: required" for k in node.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                errs += _valid(v, props[k], f"{path}.{k}")
            elif isinstance(node.get("additionalProperties"), dict):
                errs += _valid(v, node["additionalProperties"], f"{path}.{k}")
            elif not node.get("x-kubernetes-preserve-unknown-fields"):
                errs.append(f"{path}.{k}: unknown field (the API server would prune it)")
    if t == "array":
        for i, v in enumerate(value):
            errs += _valid(v, node["items"], f"{path}[{i}]")
    return errs


def schema_of(kind: type) -> dict[str, Any]:
    return crds.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def invalid(doc: dict[str, Any], kind: type) -> list[str]:
    """Schema errors of ``doc`` (metadata is the API server's ObjectMeta, not the schema's)."""
    return _valid({k: v for k, v in doc.items() if k != "metadata"}, schema_of(kind), kind.KIND)


def test_manifests_as_users_write_them_are_valid() -> None:
    docs = [hello_app(), job_doc("a", parameters={"n": 5, "lr": 0.01, "s": "x"}, resources={"numNodes": 2},
                                 data={"nested": {"any": [1, "two"]}}, retry={"limit": 2}, suspend=True),
            {"apiVersion": "balsam.io/v1", "kind": "Site", "metadata": {"name": "s"},
             "spec": {"path": "/x", "scheduler": "slurm", "elasticQueue": {"maxNodes": 4}}}]
    gitops = ROOT / "manifests" / "gitops"
    for p in sorted(gitops.rglob("*.yaml")):
        docs += [d for d in YAML(typ="safe").load_all(p.read_text()) if d]
    kinds = {k.KIND: k for k in KINDS}
    # The validator does refuse what the API server would.
    assert invalid(job_doc("bad", resources={"numNodes": "two"}), Job) == [
        "Job.spec.resources.numNodes: expected integer, got str"]
    assert invalid({"kind": "Job", "spec": {"app": "x"}}, Job) == ["Job.spec.workdir: required"]
    for d in docs:
        errs = invalid(d, kinds[d["kind"]])
        assert not errs, (d["metadata"]["name"], errs)


def test_status_as_the_store_holds_it_is_valid(site: Site, tmp_path: Path) -> None:
    """What the operator writes back to a CR's status subresource passes the CRD."""
    site.run("apply", "-f", str(write_yaml(tmp_path / "a.yaml", [hello_app(), job_doc("a")])))
    reg: Registry = site.registry()

    def finish(j: Job) -> None:
        from apis import transition

        for s in (JobState.READY, JobState.STAGED_IN, JobState.PREPROCESSED, JobState.RUNNING, JobState.RUN_DONE):
            transition(j, s, "test")
        j.status.return_code = 0
        j.status.result = {"x": [1, 2]}

    reg.mutate(Job, "a", finish)
    for obj in (reg.get(Job, "a"), reg.get(App, "hello")):
        errs = invalid(obj.to_dict(), type(obj))
        assert not errs, errs
