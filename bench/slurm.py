"""Scenario ``slurm`` (issue 7): balsamctl on a real Slurm 22.05 (4 nodes on 127.0.0.1,
started by ``scripts/slurm-up`` for the run; needs root and Debian's slurm-wlm + munge).

1. Scheduler overhead per BatchJob. One runnable job waits; then either
   * baseline — ``sbatch`` of the batch script balsamctl renders (the same script, submitted
     by hand), or
   * ``BatchJob`` — a BatchJob object is created and the batch reconciler renders, submits
     (``squeue`` lookup + ``sbatch``) and watches it;
   the clock runs from the submit (or the create) to the job's ``startTime`` (written by the
   node agent when the process starts). Trials alternate between the two; medians are kept.
   Slurm's own scheduling tick (0.4-3 s here, under load) is in both, so their difference is
   noisy; ``create_to_submitted_ms`` (create → ``schedulerId`` written: reconcile, script,
   ``squeue`` lookup, ``sbatch``) is balsamctl's own share without it.
2. Elastic queue, end to end: ``balsamctl apply -f`` of N jobs (``sleep 1``, 8 per node) on
   a site whose elastic queue is on (minNodes 1, maxNodes 4); the clock runs from the start
   of ``apply`` until every job is JOB_FINISHED. A controller manager process (``python -m
   controllers``) runs the whole time, as in production.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from controllers.batch.testing import SlurmCluster, free_port_block

from ._harness import Context, Result, Skip, StoreTarget, scenario

NODES, SLURM_CPUS, AGENT_CPUS, PACK = 4, 2, 8, 8


def _wait(pred: Any, timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    for key, label in (("bare", "bare sbatch"), ("batchjob", "BatchJob")):
        vals = result.series.get(f"sqlite.{key}_s", [])
        ax1.plot(range(1, len(vals) + 1), vals, "o-", label=label)
    ax1.set_xlabel("trial")
    ax1.set_ylabel("seconds, submit → first job running")
    ax1.set_title("scheduler overhead per allocation")
    ax1.legend(fontsize=8)
    prog = result.series.get("sqlite.progress", [])
    if prog:
        ax2.plot([p[0] for p in prog], [p[1] for p in prog])
    ax2.set_xlabel("seconds since apply")
    ax2.set_ylabel("jobs finished")
    ax2.set_title("elastic queue: apply → all finished")


class _Run:
    """A Slurm cluster, a site on the target store and a controller manager process."""

    def __init__(self, ctx: Context, target: StoreTarget) -> None:
        self.ctx = ctx
        self.root = Path(tempfile.mkdtemp(prefix="balsam-bench-slurm-"))
        self.slurm_dir = Path(f"/tmp/balsam-bench-slurm-{uuid.uuid4().hex[:8]}")
        self.slurm: SlurmCluster | None = None
        self.target = target
        self.manager: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from apis import App, Registry, Site, SiteConfig
        from store import open_store

        # a port range of its own, apart from the test fixture's
        self.slurm = SlurmCluster.start(self.slurm_dir, NODES, SLURM_CPUS,
                                        port=free_port_block(NODES, first=26817, step=89, last=40000))
        self.env = {**self.slurm.env, "SLURM_CONF": self.slurm.conf}
        self.site = SiteConfig(path=self.root / "site", name="bench", store_url=self.target.url)
        (self.site.path / "data").mkdir(parents=True)
        self.site.save()
        self.store = open_store(self.target.url)
        self.reg = Registry(self.store)
        self.reg.create(Site.model_validate({"metadata": {"name": "bench"}, "spec": {
            "path": str(self.site.path), "scheduler": "slurm", "nodeDefaults": {"cpus": AGENT_CPUS}}}))
        self.reg.create(App(metadata={"name": "probe"}, spec={"command": "true"}))  # type: ignore[arg-type]
        self.reg.create(App(metadata={"name": "work"}, spec={"command": "sleep 1"}))  # type: ignore[arg-type]
        (self.site.path / "logs").mkdir(exist_ok=True)
        with open(self.site.path / "logs" / "controller-manager.out", "ab") as out:
            self.manager = subprocess.Popen([sys.executable, "-m", "controllers", "--site", str(self.site.path)],
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        from apis import BatchJob, Node

        try:
            for bj in self.reg.list(BatchJob)[0]:
                if bj.status.state in ("pending_submission", "queued", "running"):
                    self.reg.delete(BatchJob, bj.name)
            _wait(lambda: not self.reg.list(Node)[0], 60, "every node agent to stop", 0.1)
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            self.ctx.log(f"cleanup: {e}")
        if self.manager is not None:
            self.manager.terminate()
            try:
                self.manager.wait(30)
            except subprocess.TimeoutExpired:
                self.manager.kill()
        if self.slurm is not None:
            self.slurm.stop()
        try:
            self.store.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.slurm_dir, ignore_errors=True)

    # --- part 1 ----------------------------------------------------------------------------

    def _runnable_job(self, name: str) -> None:
        from apis import Job, JobState

        self.reg.create(Job(metadata={"name": name}, spec={"app": "probe", "workdir": f"probe/{name}"}))  # type: ignore[arg-type]
        _wait(lambda: (j := self.reg.try_get(Job, name)) and j.status.state is JobState.PREPROCESSED, 30,
              f"{name} to be runnable")

    def _started_after(self, name: str, t0: float) -> float:
        from apis import Job

        job = _wait(lambda: (j := self.reg.try_get(Job, name)) and j.status.start_time and j, 60, f"{name} to start")
        return job.status.start_time.timestamp() - t0

    def _nodes_gone(self, batch_job: str) -> None:
        from apis import Node

        _wait(lambda: not [n for n in self.reg.list(Node)[0] if n.spec.batch_job == batch_job], 60,
              f"the nodes of {batch_job} to go", 0.05)

    def bare(self, i: int) -> float:
        """sbatch of the script balsamctl renders, by hand: submit → the job's start."""
        from apis import BatchJob, Site
        from controllers.batch.script import script_paths, write_script

        name = f"bare-{i}"
        self._runnable_job(f"probe-{name}")
        bj = BatchJob(metadata={"name": name, "uid": uuid.uuid4().hex}, spec={"numNodes": 1, "wallTimeMin": 5})  # type: ignore[arg-type]
        site = self.reg.get(Site, "bench")
        script = write_script(bj, site, self.target.url)
        t0 = time.time()
        out = subprocess.run(["sbatch", "--parsable", "--output", str(script_paths(bj, site)[1]), str(script)],
                             capture_output=True, text=True, timeout=60, check=True)
        slurm_id = out.stdout.strip().split(";")[0]
        # The agents of an allocation stop when their BatchJob is gone, so record the hand-made
        # allocation as an already-submitted BatchJob (the reconciler only tracks it from here).
        bj.status.state, bj.status.scheduler_id = "queued", slurm_id
        self.reg.create(bj)
        took = self._started_after(f"probe-{name}", t0)
        self.reg.delete(BatchJob, name)  # cancels it in Slurm
        self._nodes_gone(name)
        return took

    def batchjob(self, i: int) -> tuple[float, float]:
        """A BatchJob created in the store: (create → its schedulerId written, create → the job's start)."""
        from apis import BatchJob

        name = f"bj-{i}"
        self._runnable_job(f"probe-{name}")
        t0 = time.time()
        self.reg.create(BatchJob(metadata={"name": name}, spec={"numNodes": 1, "wallTimeMin": 5}))  # type: ignore[arg-type]
        _wait(lambda: (b := self.reg.try_get(BatchJob, name)) and b.status.scheduler_id, 60, f"{name} submitted",
              0.002)
        submitted = time.time() - t0
        took = self._started_after(f"probe-{name}", t0)
        self.reg.delete(BatchJob, name)
        _wait(lambda: self.reg.try_get(BatchJob, name) is None, 60, f"{name} to be cancelled and removed", 0.05)
        self._nodes_gone(name)
        return submitted, took

    # --- part 2 ----------------------------------------------------------------------------

    def elastic(self, n: int) -> dict[str, Any]:
        from apis import BatchJob, ElasticQueue, Job, JobState, Site
        from controllers.batch.elastic import LABEL

        eq = ElasticQueue(min_nodes=1, max_nodes=NODES, min_wall_time_min=5, max_wall_time_min=30,
                          wall_time_pad_min=1, max_queued_jobs=1, max_queue_wait_min=10)
        self.reg.mutate(Site, "bench", lambda s: setattr(s.spec, "elastic_queue", eq))
        manifest = self.root / "jobs.yaml"
        manifest.write_text("".join(
            f"---\napiVersion: balsam.io/v1\nkind: Job\nmetadata:\n  name: w{i}\n  labels: {{bench: elastic}}\n"
            f"spec:\n  app: work\n  workdir: work/w{i}\n  resources: {{nodePackingCount: {PACK}}}\n"
            for i in range(n)))
        balsamctl = Path(sys.executable).parent / "balsamctl"
        t0 = time.perf_counter()
        subprocess.run([str(balsamctl), "apply", "-f", str(manifest), "-o", "name"], env=self.env, check=True,
                       capture_output=True, timeout=120, cwd=self.site.path)
        t_apply = time.perf_counter() - t0
        progress: list[tuple[float, int]] = []
        last = -1
        while True:
            done = self.reg.index_count(Job, "state", JobState.JOB_FINISHED.value)
            failed = self.reg.index_count(Job, "state", JobState.FAILED.value)
            now = time.perf_counter() - t0
            if done != last:
                progress.append((round(now, 3), done))
                last = done
            if done >= n or failed or now > 300:
                break
            time.sleep(0.02)
        total = time.perf_counter() - t0
        if done < n:
            raise RuntimeError(f"only {done}/{n} jobs finished ({failed} failed) after {total:.0f}s")
        mine = [b for b in self.reg.list(BatchJob)[0] if b.metadata.labels.get(LABEL) == "bench"]
        self.reg.mutate(Site, "bench", lambda s: setattr(s.spec, "elastic_queue", None))
        return {"total": total, "apply": t_apply, "progress": progress, "batchjobs": len(mine),
                "nodes": sum(b.spec.num_nodes for b in mine)}


@scenario("slurm", help="real Slurm: apply of N jobs with the elastic queue → all finished; overhead of a BatchJob "
                        "(submit → first job running) vs a bare sbatch of the same script",
          backends=("sqlite",), default_backend="sqlite", plot=_plot, in_default_run=False)
def run_slurm(ctx: Context) -> Result:
    if not shutil.which("slurmctld") or not shutil.which("sbatch"):
        raise Skip("Slurm is not installed (scripts/install: slurm-wlm munge)")
    if os.geteuid() != 0:
        raise Skip("the Slurm daemons need root")
    n = ctx.pick(tiny=20, small=50, default=100, large=400)
    trials = ctx.pick(tiny=2, small=3, default=7, large=11)
    res = Result("slurm", inputs={
        "jobs": n, "trials": trials, "slurm_nodes": NODES, "slurm_cpus_per_node": SLURM_CPUS,
        "agent_cpus_per_node": AGENT_CPUS, "job": f"sleep 1, nodePackingCount {PACK}",
        "elastic_queue": {"minNodes": 1, "maxNodes": NODES, "maxQueuedJobs": 1},
        "method": "overhead: submit (sbatch by hand, or create BatchJob) → the waiting job's startTime, trials "
                  "alternating, medians; elastic: start of 'balsamctl apply -f' → every job JOB_FINISHED, a "
                  "controller manager process running"})

    def one(target: StoreTarget) -> None:
        b = target.backend
        run = _Run(ctx, target)
        try:
            run.start()
            bare, bjs, subs = [], [], []
            for i in range(trials):
                bare.append(run.bare(i))
                sub, took = run.batchjob(i)
                bjs.append(took)
                subs.append(sub)
                ctx.log(f"trial {i}: bare sbatch {bare[-1]:.3f}s, BatchJob {bjs[-1]:.3f}s (submitted after "
                        f"{sub * 1000:.0f} ms)")
            e = run.elastic(n)
            ctx.log(f"elastic: {n} jobs finished {e['total']:.2f}s after apply ({e['batchjobs']} BatchJob(s), "
                    f"{e['nodes']} node(s))")
        finally:
            run.stop()
        mb, mj = statistics.median(bare), statistics.median(bjs)
        res.add("bare_sbatch_to_running_s", mb, "s", "sbatch of the rendered script → first job running (median)",
                backend=b, baseline=True)
        res.add("batchjob_to_running_s", mj, "s", "create BatchJob → first job running (median)", backend=b,
                ratio_to="bare_sbatch_to_running_s", ratio_unit="× bare sbatch")
        res.add("overhead_per_batchjob_ms", (mj - mb) * 1000, "ms",
                "BatchJob minus bare sbatch (medians; Slurm's scheduling tick makes this noisy)", backend=b)
        res.add("create_to_submitted_ms", statistics.median(subs) * 1000, "ms",
                "create BatchJob → schedulerId written (reconcile, script, squeue lookup, sbatch; median)",
                backend=b, target="<= 200")
        res.add("apply_to_all_finished_s", e["total"], "s", f"apply of {n} jobs → all JOB_FINISHED (elastic queue)",
                backend=b)
        ideal = -(-n // (NODES * PACK)) * 1.0
        res.add("ideal_compute_s", ideal, "s", f"{n} × 1 s on {NODES * PACK} slots, no overhead at all", backend=b)
        res.add("elastic_batchjobs", e["batchjobs"], "BatchJobs", "BatchJobs the elastic queue created", backend=b,
                nodes=e["nodes"])
        res.add("apply_s", e["apply"], "s", "the 'balsamctl apply' command itself", backend=b)
        res.series[f"{b}.bare_s"] = bare
        res.series[f"{b}.batchjob_s"] = bjs
        res.series[f"{b}.submitted_s"] = subs
        res.series[f"{b}.progress"] = e["progress"]

    ctx.per_backend(res, one)
    return res
