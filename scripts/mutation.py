"""Mutation testing of the core rules with cosmic-ray: run by ``scripts/mutation``.

For each scoped module (``MODULES``: the state table, workdir checks, selectors, templates and
quoting, packing constraints, the SQLite store's compare-and-swap and revisions, the retry
policy, dependency decisions) this

1. copies the working tree (tracked and untracked-but-not-ignored files) to a scratch
   directory, so the mutants never touch the tree you work in, whatever stops the run;
2. lets cosmic-ray list every mutant of the module (``cosmic-ray init``) and marks those
   outside the module's chosen functions as skipped (a module such as store/_sqlite.py is
   scoped to its compare/txn path);
3. checks that the module's focused tests pass unmutated (``cosmic-ray baseline``), then runs
   them against each mutant (``cosmic-ray exec``), one process per module, ``--jobs`` at once;
4. prints the kill rate per module and every survivor (file:line, operator, diff), and
   writes ``mutation-results/REPORT.md`` plus ``mutation-results/NAME.json``.

A mutant counts as killed when the tests fail or time out (cosmic-ray's "killed"); a mutant
that cannot even be imported ("incompetent") counts as killed too, as cosmic-ray does.
Equivalent mutants (no test can tell them apart) are explained one line each in
docs/mutation.md; the kill rate printed is the raw one, before any explanation.

Usage: scripts/mutation [--jobs N] [--keep] [NAME ...]   (names: see --list)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = ROOT / "mutation-results"

# Operators whose mutants only exercise Python, not our rules: bit shifts and bitwise ops on
# numbers we never shift, powers; cosmic-ray's VariableReplacer/Inserter put random names in.
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_\w+_(Pow|RShift|LShift|BitOr|BitAnd|BitXor)$",
    r"core/ReplaceBinaryOperator_(Pow|BitOr|BitAnd|BitXor)_\w+$",
    r"core/VariableReplacer",
    # ``x is None`` -> ``x == None`` (and ``is not`` -> ``!=``): equivalent for every value here.
    r"core/ReplaceComparisonOperator_Is_Eq$",
    r"core/ReplaceComparisonOperator_IsNot_NotEq$",
    # A value comparison turned into an identity one (``a == b`` -> ``a is b``): equivalent
    # under CPython's interning of literals and small ints, else the same as ``!=``/``==``
    # flipped, which the other mutants of that comparison already are.
    r"core/ReplaceComparisonOperator_(Eq|NotEq|Lt|LtE|Gt|GtE)_(Is|IsNot)$",
    r"core/VariableInserter",
]


@dataclass
class Module:
    name: str
    path: str
    tests: list[str]  # pytest arguments: a fast, focused selection
    functions: list[str] = field(default_factory=list)  # qualified names; empty: the whole file
    timeout: float = 120.0


MODULES = [
    Module("states", "apis/_states.py", ["tests/apis/test_states.py", "-m", "not etcd"]),
    Module("workdir", "apis/_kinds.py", ["tests/apis/test_workdir.py"], ["validate_workdir"]),
    Module("selectors", "apis/_selectors.py", ["tests/apis/test_selectors.py"]),
    Module("templates", "apis/_templates.py", ["tests/nodeagent/test_templates.py",
                                              "tests/nodeagent/test_template_rules.py",
                                              "tests/apis/test_template_quoting.py",
                                              "tests/apis/test_template_quoting_rules.py"]),
    Module("quoting", "nodeagent/_launch.py", ["tests/nodeagent/test_launch.py"], ["simple_argv"]),
    # The constraints a placement must meet (fit, whole GPUs, ids, occupancy), not the
    # first-fit search around them; without the 400-example property test (minutes a mutant).
    Module("packing", "controllers/placement/packing.py",
           ["tests/controllers/test_node_fit.py", "tests/controllers/test_packing.py", "-k",
            "not property and not many"],
           ["whole_gpus", "JobShape.__post_init__", "JobShape.multi_node", "JobShape.occupancy", "JobShape.of",
            "NodeOccupancy.could_ever_fit", "NodeOccupancy.can_fit", "NodeOccupancy.allocate",
            "NodeOccupancy._take", "NodeOccupancy.release", "_Group.allows"]),
    # Compare-and-swap: the compare itself, the txn's checks, put/delete with an expected
    # revision, the revision counters (not _txn_in's row writing).
    Module("store-cas", "store/_sqlite.py", ["tests/store/test_txn.py", "tests/store/test_kv.py",
                                            "tests/store/test_sqlite_txn_rules.py", "-m", "not etcd"],
           ["_compare_holds", "_check_branch", "SQLiteStore.put", "SQLiteStore.delete", "SQLiteStore.txn",
            "SQLiteStore._revisions", "SQLiteStore.current_revision"]),
    Module("retry", "controllers/hook.py", ["tests/controllers/test_decisions.py"],
           ["HookReconciler._default", "HookReconciler._error_retryable", "HookReconciler._retry_or_fail"]),
    Module("dependency", "controllers/dependency.py", ["tests/controllers/test_decisions.py"],
           ["DependencyReconciler.reconcile", "DependencyReconciler._cycle", "names_text"]),
]


def _function_lines(path: Path, names: list[str]) -> list[tuple[int, int]]:
    """(first, last) line of each named function or class (``Class.method`` qualified)."""
    tree = ast.parse(path.read_text())
    found: dict[str, tuple[int, int]] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                q = f"{prefix}{node.name}"
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                found[q] = (first, node.end_lineno or node.lineno)
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{q}.")

    walk(tree.body, "")
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"mutation: error: {path}: no function or class {', '.join(missing)}")
    return [found[n] for n in names]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _config(m: Module) -> str:
    # PYTHONPATH puts the copy's packages ahead of the editable install of the real tree; no
    # plugin autoload (hypothesis, asyncio, kmock... cost a second per mutant and these tests
    # need none of them).
    cmd = shlex.join(["env", "PYTHONPATH=.", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", str(PYTHON), "-m", "pytest",
                      "-x", "-q", "-p", "no:cacheprovider", *m.tests])
    excluded = ", ".join(json.dumps(e) for e in EXCLUDED_OPERATORS)
    return (f'[cosmic-ray]\nmodule-path = "{m.path}"\ntimeout = {m.timeout}\nexcluded-modules = []\n'
            f'test-command = {json.dumps(cmd)}\n\n[cosmic-ray.distributor]\nname = "local"\n\n'
            f'[cosmic-ray.filters.operators-filter]\nexclude-operators = [{excluded}]\n')


def _skip_outside(session: Path, ranges: list[tuple[int, int]]) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            line = item.mutations[0].start_pos[0]
            if not any(a <= line <= b for a, b in ranges):
                db.set_result(item.job_id, WorkResult(output="outside the scoped functions",
                                                      worker_outcome=WorkerOutcome.SKIPPED))


def _summary(m: Module, session: Path, commit: str, seconds: float) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    killed = survived = incompetent = 0
    survivors = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.test_outcome == TestOutcome.SURVIVED:
                survived += 1
                mut = item.mutations[0]
                survivors.append({"where": f"{m.path}:{mut.start_pos[0]}", "operator": mut.operator_name,
                                  "occurrence": mut.occurrence, "diff": _short_diff(result.diff or "")})
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                incompetent += 1
            else:
                killed += 1
        pending = sum(1 for _ in db.pending_work_items)
    total = killed + survived + incompetent
    return {"module": m.name, "path": m.path, "functions": m.functions or ["(whole file)"], "tests": m.tests,
            "commit": commit, "mutants": total, "killed": killed + incompetent, "incompetent": incompetent,
            "survived": survived, "pending": pending,
            "kill_rate": round(100.0 * (killed + incompetent) / total, 1) if total else None,
            "seconds": round(seconds), "survivors": sorted(survivors, key=lambda s: s["where"])}


def _short_diff(diff: str) -> str:
    lines = [x for x in diff.splitlines() if x.startswith(("-", "+")) and not x.startswith(("---", "+++"))]
    return " | ".join(x.strip() for x in lines)


def _reopen_survivors(session: Path) -> int:
    """Forget the results of the mutants that survived, so ``exec`` runs them again."""
    db = sqlite3.connect(session)
    try:
        with db:
            n = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED' "
                           "OR test_outcome = 'survived'").rowcount
    finally:
        db.close()
    return n


def _sample(session: Path, n: int, seed: int = 21) -> tuple[int, int]:
    """Keep ``n`` of the pending mutants (a seeded random choice), skip the rest."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(i.job_id for i in db.pending_work_items)
        if len(pending) <= n:
            return len(pending), len(pending)
        keep = set(random.Random(seed).sample(pending, n))
        for job_id in pending:
            if job_id not in keep:
                db.set_result(job_id, WorkResult(output="not in the sample", worker_outcome=WorkerOutcome.SKIPPED))
    return n, len(pending)


def run_module(m: Module, commit: str, keep: bool, count_only: bool = False, recheck: bool = False,
               sample: int = 0) -> dict:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"mutation-{m.name}-"))
    try:
        _copy_tree(work)
        cfg, session = work / "cosmic-ray.toml", work / "session.sqlite"
        cfg.write_text(_config(m))
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("CI", None)  # a focused local run; real services are still used when present

        def cr(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(PYTHON), "-m", "cosmic_ray.cli", *args], cwd=work, env=env,
                                  capture_output=True, text=True)

        saved = RESULTS / f"{m.name}.sqlite"
        if recheck:
            # Only the survivors of the last full run, against today's tests (the module's
            # code must be the one that run mutated: the mutants are positions in it).
            if not saved.exists():
                raise RuntimeError(f"{m.name}: no earlier run to recheck ({saved} is missing)")
            shutil.copy(saved, session)
            _reopen_survivors(session)
        else:
            r = cr("init", str(cfg), str(session))
            if r.returncode:
                raise RuntimeError(f"{m.name}: cosmic-ray init failed: {r.stderr[-2000:]}")
            r = subprocess.run([str(PYTHON.parent / "cr-filter-operators"), str(session), str(cfg)], cwd=work,
                               env=env, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"{m.name}: operators filter failed: {r.stderr[-2000:]}")
            if m.functions:
                _skip_outside(session, _function_lines(work / m.path, m.functions))
            sampled = _sample(session, sample) if sample else None
        if count_only:
            from cosmic_ray.work_db import WorkDB, use_db

            with use_db(str(session), WorkDB.Mode.open) as db:
                n = sum(1 for _ in db.pending_work_items)
            return {"module": m.name, "mutants": n}
        r = cr("baseline", str(cfg))
        if r.returncode:
            raise RuntimeError(f"{m.name}: the focused tests fail without any mutation:\n{r.stdout[-3000:]}"
                               f"{r.stderr[-3000:]}")
        r = cr("exec", str(cfg), str(session))
        if r.returncode:
            raise RuntimeError(f"{m.name}: cosmic-ray exec failed: {r.stderr[-2000:]}")
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(session, saved)
        out = _summary(m, session, commit, time.monotonic() - t0)
        if not recheck and sampled and sampled[0] < sampled[1]:
            out["sampled"] = f"{sampled[0]} of {sampled[1]}"
        out["module_commit"] = subprocess.run(["git", "log", "-1", "--format=%h", "--", m.path], cwd=ROOT,
                                              capture_output=True, text=True).stdout.strip()
        if recheck:  # the mutants are those of the full run; the tests are today's
            earlier_json = RESULTS / f"{m.name}.json"
            earlier = json.loads(earlier_json.read_text()) if earlier_json.exists() else {"commit": commit}
            out["commit"], out["rechecked_at"] = earlier["commit"], commit
        return out
    finally:
        if keep:
            print(f"mutation: {m.name}: scratch copy kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _report(results: list[dict]) -> str:
    out = ["| module | file (functions) | mutants | killed | survived | kill rate | commit |",
           "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        fns = ", ".join(r["functions"])
        mutants = f"{r['mutants']} (sample of {r['sampled'].split(' of ')[1]})" if r.get("sampled") else r["mutants"]
        commit = r["commit"] + (f", rechecked at {r['rechecked_at']}" if r.get("rechecked_at") else "")
        out.append(f"| {r['module']} | {r['path']} ({fns}) | {mutants} | {r['killed']} | {r['survived']} "
                   f"| {r['kill_rate']} % | {commit} |")
    out.append("")
    for r in results:
        if r["survivors"]:
            out.append(f"Survivors of {r['module']}:")
            out += [f"- {s['where']} {s['operator']}#{s['occurrence']}: {s['diff']}" for s in r["survivors"]]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="modules to test (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="modules run at once (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies")
    p.add_argument("--recheck", action="store_true",
                   help="run only the survivors of the last run again (after adding tests)")
    p.add_argument("--sample", type=int, default=0, metavar="N",
                   help="run a seeded random sample of N mutants per module (a loaded machine)")
    p.add_argument("--report", action="store_true", help="summarize the saved sessions, run nothing")
    p.add_argument("--count", action="store_true", help="only count the mutants of each module")
    p.add_argument("--list", action="store_true", help="list the modules and their tests")
    a = p.parse_args(argv)
    if a.list:
        for m in MODULES:
            print(f"{m.name:<11} {m.path} {' '.join(m.functions)}\n{'':<11} tests: {' '.join(m.tests)}")
        return 0
    known = {m.name: m for m in MODULES}
    bad = [n for n in a.names if n not in known]
    if bad:
        print(f"mutation: error: unknown module {', '.join(bad)} (see --list)", file=sys.stderr)
        return 2
    chosen = [known[n] for n in a.names] or MODULES
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--", *(m.path for m in chosen)], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        commit += "+changes"
    RESULTS.mkdir(exist_ok=True)
    if a.report:
        results = [json.loads((RESULTS / f"{m.name}.json").read_text()) for m in chosen
                   if (RESULTS / f"{m.name}.json").exists()]
        for m in chosen:
            if not (RESULTS / f"{m.name}.json").exists() and (RESULTS / f"{m.name}.sqlite").exists():
                r = _summary(m, RESULTS / f"{m.name}.sqlite", "(saved session)", 0)
                (RESULTS / f"{m.name}.json").write_text(json.dumps(r, indent=2) + "\n")
                results.append(r)
        print(_report(results))
        return 0
    results: list[dict] = []
    failed = False
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {pool.submit(run_module, m, commit, a.keep, a.count, a.recheck, a.sample): m for m in chosen}
        for fut, m in futures.items():
            try:
                r = fut.result()
            except RuntimeError as e:
                print(f"mutation: error: {e}", file=sys.stderr)
                failed = True
                continue
            if a.count:
                print(f"{m.name:<11} {r['mutants']} mutants")
                continue
            results.append(r)
            (RESULTS / f"{m.name}.json").write_text(json.dumps(r, indent=2) + "\n")
            print(f"{m.name:<11} {r['kill_rate']} % killed ({r['killed']}/{r['mutants']}, "
                  f"{r['survived']} survived, {r['seconds']} s)", flush=True)
    if a.count:
        return 0
    report = _report(results)
    (RESULTS / "REPORT.md").write_text(report + "\n")
    print()
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
