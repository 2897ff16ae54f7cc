"""Scenario ``python-apps`` (issue 6): N ``Adder`` jobs as futures, end to end.

Per backend, on a fresh store and a fresh site directory with a controller manager and one
node agent (``--cpus C``) running as processes, as ``balsamctl up`` runs them:

1. baselines, measured in the same run: the spawn limit (``Popen(["/bin/true"])`` + wait,
   sequential and 2 in flight, ``bench.spawn``), and — when ``parsl`` is installed (the
   ``.[bench]`` extra) — Parsl python apps on a local HighThroughputExecutor with C workers:
   the same N additions submitted one by one and gathered with ``as_completed``;
2. cold start: the site's first Python job, submit → result (includes starting the agent's
   fork server);
3. the run: N jobs from ``Adder.map`` (created in chunks as they are built, issue 14's third
   round) → every job gathered with ``Job.objects.as_completed`` (each result checked).
   Figures: tasks/s from the first submit to the last result, and the time from the first
   submit to the first result. Before it, on the same site, the method of the rounds before:
   N ``Adder.submit(..., save=False)`` → one ``Job.objects.bulk_create`` (``tasks_per_s_bulk``).

The class is sent by value (``sync(by_value=True)``): each warm worker unpickles it once instead
of importing this module (which imports the harness). Jobs run in the agent's warm Python
workers (issue 14), as Parsl runs its tasks in long-lived workers. Also measured: one Adder
job at a time on the running site, submit → ``result()`` (p50, p90).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import apis
from apis import ApplicationDefinition, Job, Node
from apis import _config as config
from apis._config import SiteConfig
from controllers._leader import LEASE_PREFIX

from ._harness import Context, Result, StoreTarget, scenario
from ._up import cmdline, proc_cpu, site_parent, site_settings
from .spawn import measure_spawn_rate

REPO = Path(__file__).resolve().parent.parent


class Adder(ApplicationDefinition):
    """The seed's Adder."""

    def run(self, x: int, y: int) -> int:
        return x + y


PARSL_SCRIPT = textwrap.dedent("""
    import concurrent.futures, json, sys, tempfile, time
    import parsl, psutil
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    n, workers = int(sys.argv[1]), int(sys.argv[2])
    run_dir = tempfile.mkdtemp(prefix="parsl-bench-")

    @parsl.python_app
    def add(x, y):
        return x + y

    t0 = time.perf_counter()
    parsl.load(Config(
        executors=[HighThroughputExecutor(label="htex", max_workers_per_node=workers, address="127.0.0.1",
                                          provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, usage_tracking=0))
    assert add(0, 0).result() == 0
    cold = time.perf_counter() - t0

    def cpu():  # this process and every process Parsl started (interchange, worker pool, workers)
        me = psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    c1 = cpu()
    t1 = time.perf_counter()
    futs = [add(i, 1) for i in range(n)]
    submitted = time.perf_counter() - t1
    first = None
    total = 0
    for f in concurrent.futures.as_completed(futs):
        total += f.result()
        if first is None:
            first = time.perf_counter() - t1
    elapsed = time.perf_counter() - t1
    cpu_s = cpu() - c1
    assert total == n * (n - 1) // 2 + n, total
    print(json.dumps({"cold_s": cold, "submit_s": submitted, "first_s": first, "elapsed_s": elapsed, "cpu_s": cpu_s}))
    parsl.dfk().cleanup()
""")


def parsl_available() -> bool:
    try:
        import parsl  # noqa: F401
    except ImportError:
        return False
    return True


def run_parsl(n: int, workers: int, timeout: float) -> dict[str, float]:
    # Parsl starts its interchange and workers as commands from the environment's bin/.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    out = subprocess.run([sys.executable, "-c", PARSL_SCRIPT, str(n), str(workers)], capture_output=True,
                         text=True, timeout=timeout, cwd=tempfile.gettempdir(), env=dict(os.environ, PATH=path))
    if out.returncode != 0:
        raise RuntimeError(f"parsl run failed: {out.stderr.strip().splitlines()[-1:]}")
    doc: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


class Site:
    """A site directory with a controller manager and one node agent as processes."""

    def __init__(self, url: str, cpus: int, namespace: str = "default") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="balsam-bench-site-", dir=site_parent()))  # tmpfs, as e2e's
        path = self.dir / "site"
        (path / "data").mkdir(parents=True)
        (path / "logs").mkdir()
        self.namespace = namespace
        self.cfg = SiteConfig(path=path, name="bench", store_url=url, namespace=namespace, extra=site_settings())
        self.cfg.save()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.procs = []
        for args, log in (
            (["-m", "controllers", "--site", str(path), "--store", url, "-n", namespace], "controllers.out"),
            (["-m", "nodeagent", "--site", str(path), "--store", url, "-n", namespace, "--cpus", str(cpus)],
             "nodeagent.out"),
        ):
            with open(path / "logs" / log, "ab") as f:
                self.procs.append(subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=f,
                                                   stderr=subprocess.STDOUT))
        self.registry = apis.use(url)
        # Up: the node agent registered its Node AND the controller manager holds its leader
        # lease (it starts its informers right after). Waiting for the Node alone measured the
        # "first job" from whenever the manager had got to in its start: 43-722 ms for the same
        # code (issue 14, third round), 49-203 ms once the lease is waited for too.
        deadline = time.monotonic() + 60
        lease = f"{LEASE_PREFIX}{namespace}"
        while self.registry.count(Node, namespace) == 0 or self.registry.store.get(lease) is None:
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the site did not start; see {path / 'logs'}")
            time.sleep(0.01)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the controller manager, the node agent, its fork server(s)
        and their warm workers (live ones, and those reaped), and this client process."""
        ctl, agent = self.procs
        mine = cmdline(agent.pid)  # the agent's own fork server is a fork of it (same command line)
        servers = [p for p in _children(agent.pid) if cmdline(p) == mine or "apis._forkserver" in " ".join(cmdline(p))]
        return {
            "manager": proc_cpu(ctl.pid)["self"],
            "agent": proc_cpu(agent.pid)["self"],
            "fork_server": sum(proc_cpu(p)["self"] for p in servers),
            "workers": sum(proc_cpu(p)["children"] + sum(proc_cpu(w)["self"] for w in _children(p)) for p in servers),
            "client": time.process_time(),
        }

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        config.reset()

        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def one_by_one(runs: int, namespace: str) -> list[float]:
    """Seconds of ``Adder.submit(...).result()`` for ``runs`` jobs, one after the other, sorted."""
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        assert Adder.submit(f"one/{i}", x=i, y=1, namespace=namespace).result(timeout=120) == i + 1
        out.append(time.perf_counter() - t0)
    return sorted(out)


def run_adders(n: int, pack: int, timeout: float, namespace: str = "default",
               site: Site | None = None, how: str = "map", tag: str = "adders") -> dict[str, Any]:
    """Submit N Adder jobs and gather them with as_completed (with ``site``: also the CPU
    milliseconds per job of each process). ``how``: ``map`` (``Adder.map``: written in chunks
    as they are built) or ``bulk`` (``Adder.submit(save=False)`` × N, then one
    ``Job.objects.bulk_create``: the method before issue 14's third round)."""
    cpu0 = site.cpu() if site is not None else {}
    t0 = time.perf_counter()
    if how == "map":
        jobs = Adder.map(tag + "/{i}", ({"x": i, "y": 1} for i in range(n)), node_packing_count=pack,
                         namespace=namespace)
    else:
        jobs = Job.objects.bulk_create([
            Adder.submit(f"{tag}/{i}", x=i, y=1, save=False, node_packing_count=pack, namespace=namespace)
            for i in range(n)])
    t_created = time.perf_counter()
    first: float | None = None
    total = 0
    progress: list[tuple[float, int]] = []
    for k, job in enumerate(Job.objects.as_completed(jobs, timeout=timeout), 1):
        now = time.perf_counter()
        total += job.result()
        if first is None:
            first = now - t0
        if k % max(1, n // 100) == 0 or k == n:
            progress.append((round(now - t0, 3), k))
    elapsed = time.perf_counter() - t0
    cpu1 = site.cpu() if site is not None else {}
    if total != n * (n - 1) // 2 + n:
        raise AssertionError(f"wrong sum of results: {total}")
    return {"submit_s": t_created - t0, "first_s": first, "elapsed_s": elapsed, "progress": progress,
            "cpu_ms_per_job": {k: (cpu1[k] - cpu0[k]) * 1000 / n for k in cpu1}}


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    backends: list[str | None] = [*result.backends] or [None]
    for b in backends:
        series = result.series.get(f"{b}.progress", [])
        if series:
            ax1.plot([p[0] for p in series], [p[1] for p in series], label=f"balsamctl ({b})")
    ax1.set_xlabel("seconds since the first submit")
    ax1.set_ylabel("results gathered")
    ax1.set_title("as_completed")
    ax1.legend(fontsize=8)
    labels, vals, colors = [], [], []
    for f in result.figures:
        if f.unit == "tasks/s" and f.value is not None and f.name != "vs_parsl":
            labels.append(f.label or f.key)
            vals.append(f.value)
            colors.append("#999999" if f.baseline or "parsl" in f.name else "#3b75af")
    ax2.barh(range(len(vals)), vals, color=colors)
    ax2.set_yticks(range(len(vals)), labels, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("tasks / s")
    ax2.set_title("throughput vs the spawn limit and Parsl")


@scenario("python-apps", help="N Adder jobs bulk-created and gathered with as_completed, vs Parsl and the spawn limit",
          backends=("sqlite", "etcd"), plot=_plot, in_default_run=False)
def run_python_apps(ctx: Context) -> Result:
    n = ctx.pick(tiny=50, small=1000, default=10_000, large=50_000)
    cpus = ctx.pick(tiny=4, default=8)
    timeout = ctx.pick(tiny=120, small=600, default=1800, large=7200)
    res = Result("python-apps", inputs={
        "jobs": n, "node_cpus": cpus, "node_packing_count": cpus,
        "method": "Adder.submit(save=False) x N → Job.objects.bulk_create → Job.objects.as_completed; a controller "
                  "manager and one node agent as processes; jobs run in the agent's warm Python workers",
    })
    seq = measure_spawn_rate(ctx.pick(tiny=0.2, default=1.0), 1)
    par = measure_spawn_rate(ctx.pick(tiny=0.2, default=1.0), 2)
    res.add("spawn_limit", seq, "tasks/s", "spawn limit: Popen(/bin/true)+wait, sequential", baseline=True)
    res.add("spawn_limit_2", par, "tasks/s", "spawn limit: 2 in flight")
    if parsl_available():
        ctx.log(f"parsl: {n:,} python apps on HTEX with {cpus} workers")
        try:
            p = run_parsl(n, cpus, timeout)
        except Exception as e:  # noqa: BLE001 - a baseline that fails is noted, the run goes on
            res.note(f"parsl baseline failed: {e}")
        else:
            res.add("parsl", n / p["elapsed_s"], "tasks/s", "Parsl HTEX python apps", baseline=True,
                    ratio_to="spawn_limit", ratio_unit="× spawn limit", reference=1200.0)
            res.add("parsl_first_result_ms", p["first_s"] * 1000, "ms", "Parsl: submit → first result")
            res.add("parsl_cold_start_s", p["cold_s"], "s", "Parsl: load → first result (startup)")
            if "cpu_s" in p:
                res.add("parsl_cpu_ms", p["cpu_s"] * 1000 / n, "CPU ms/job",
                        "Parsl: CPU per task, all its processes (client, interchange, workers)")
    else:
        res.note("parsl is not installed (pip install -e '.[bench]'): no Parsl baseline")

    def one(target: StoreTarget) -> None:
        b = target.backend
        ctx.log(f"{b}: starting a site (controller manager + node agent with {cpus} cpus)")
        ns = f"bench-{uuid.uuid4().hex[:8]}" if target.shared else "default"  # a shared etcd: keys of our own
        site = Site(target.url, cpus, ns)
        try:
            Adder.sync(by_value=True, namespace=ns)
            t0 = time.perf_counter()
            assert Adder.submit("cold/0", x=1, y=1, namespace=ns).result(timeout=120) == 2
            res.add("cold_first_result_ms", (time.perf_counter() - t0) * 1000, "ms",
                    "first Python job of the site: submit → result (its first warm worker)", backend=b)
            lat = one_by_one(ctx.pick(tiny=10, default=40), ns)
            res.add("one_job_p50_ms", lat[len(lat) // 2] * 1000, "ms",
                    "running site: one Adder submit → result(), p50", backend=b, runs=len(lat),
                    p90_ms=round(lat[int(len(lat) * 0.9)] * 1000, 2))
            ctx.log(f"{b}: {n:,} Adder jobs, submit × N + bulk_create (before), then Adder.map")
            before = run_adders(n, cpus, timeout, ns, site, how="bulk", tag="bulk")
            r = run_adders(n, cpus, timeout, ns, site, how="map", tag="adders")
        finally:
            site.close()
        res.add("tasks_per_s_bulk", n / before["elapsed_s"], "tasks/s",
                f"balsamctl ({b}), submit(save=False) × N + one bulk_create (before map)", backend=b,
                ratio_to="parsl" if res.find("parsl") is not None else None, ratio_unit="× Parsl",
                cpu_ms_total=round(sum(before["cpu_ms_per_job"].values()), 3),
                cpu_ms=({k: round(v, 3) for k, v in before["cpu_ms_per_job"].items()}),
                first_result_ms=round(before["first_s"] * 1000, 1))
        res.series[f"{b}.progress"] = r["progress"]
        res.add("tasks_per_s", n / r["elapsed_s"], "tasks/s", f"balsamctl ({b}): Adder.map → last result", backend=b,
                ratio_to="spawn_limit", ratio_unit="× spawn limit", jobs=n, elapsed_s=round(r["elapsed_s"], 3))
        if res.find("parsl") is not None:
            res.add("vs_parsl", n / r["elapsed_s"], "tasks/s", f"balsamctl ({b}) vs Parsl", backend=b,
                    ratio_to="parsl", ratio_unit="× Parsl")
        res.add("first_result_ms", r["first_s"] * 1000, "ms", "submit → first result (Adder.map; as_completed starts once map returns)",
                backend=b)
        res.add("bulk_create_s", r["submit_s"], "s", f"Adder.map: build + create {n:,} jobs", backend=b)
        for who, ms in r["cpu_ms_per_job"].items():
            res.add(f"cpu_ms_{who}", ms, "CPU ms/job", f"CPU per job: {who.replace('_', ' ')}", backend=b)
        res.add("cpu_ms_total", sum(r["cpu_ms_per_job"].values()), "CPU ms/job", "CPU per job: all processes",
                backend=b)

    ctx.per_backend(res, one)
    return res
