"""Scenario ``sites`` (issue 20): two sites on one etcd cluster, as on separate machines.

Two site directories (``polaris`` and ``aurora``, one namespace each), each run by its own
``balsamctl up --nodes 2`` (a controller manager and two node agents) with the site's own etcd
credentials, and a client that has nothing but a store URL and its credentials: it submits
jobs to both sites by name (``Job(..., site_name=...)``), watches both and gathers the results
with ``Job.objects.as_completed``.

Two stores, same run, same machine:

* **baseline** — one plain etcd member (no TLS, no auth);
* **secure** — three members over TLS with client certificates, etcd's auth on, every process
  under its own role (``balsamctl admin site-role`` / ``user-role``; docs/design.md).

On each: e2e jobs/s (N trivial jobs split over the two sites, submit → last finished) and DAG
hop latency (a chain per site, child's own start stamp − parent's own end stamp). Goal: the
secure cluster costs ≤ 30 % (jobs/s ≥ 0.7 × baseline, hop p50/p99 ≤ 1.3 × baseline).

Then, on the secure cluster, two more runs of N jobs: one where the etcd member the client is
using is killed (SIGKILL) a third of the way through, one where the Raft leader is. Failover
pause = the longest time in which no job changed state after the kill (the jobs' own
``status.lastUpdate`` stamps, read from a watch of both sites), against the longest such gap of
the undisturbed run (same run). Also counted: errors the client saw, tracebacks in the sites'
logs, jobs not finished, jobs run more than once (each run appends a line to its workdir).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import apis
import store as st
from apis import App, Job, ObjectMeta, Registry, Site, SiteConfig, SiteSpec
from apis._roles import site_permissions, user_permissions
from store.testing import EtcdCluster, etcd_available

from ._harness import Context, Result, Skip, scenario
from ._up import CLI, bench_env, site_parent

SITES = ("polaris", "aurora")
# up's --lease-ttl: up gives an agent 2 × TTL + 10 s to register, which a machine shared with
# other test runs (load 20-40 on 2 cores) did not always give at the default of 10 s.
LEASE_TTL = 20
# etcd's own Raft timing for both stores (the tests' 10/100 ms starve a 3-member cluster that
# shares 2 cores with its workload; an etcd run by someone else has these).
HEARTBEAT_MS, ELECTION_MS = 100, 1000
# Each run appends a line to its workdir's "runs": a job run twice has two.
RUN = "bash -c 'echo $EPOCHREALTIME >> runs'"
STAMP = "bash -c 'echo $EPOCHREALTIME >> runs; echo $EPOCHREALTIME > start; echo $EPOCHREALTIME > end'"


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))] if s else float("nan")


@dataclass
class TwoSites:
    """Two sites run by ``balsamctl up`` on one cluster, and a client with only a store URL."""

    cluster: EtcdCluster
    root: Path
    secure: bool
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    client_url: str = ""
    admin: Registry | None = None

    def url_for(self, user: str) -> str:
        return self.cluster.url_for(user) if self.secure else self.cluster.plain_url

    def data(self, site: str) -> Path:
        return self.root / site / "data"

    def start(self, nodes: int = 2, cpus: int = 16) -> None:
        self.admin = Registry(st.open_store(self.cluster.url))
        for site in SITES:
            path = self.root / site
            for sub in ("data", "logs", "apps"):
                (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            self.admin.create(Site(metadata=ObjectMeta(name=site, namespace=site), spec=SiteSpec(path=str(path))))
            for app, cmd in (("run", RUN), ("stamp", STAMP)):
                self.admin.create(App(metadata=ObjectMeta(name=app, namespace=site), spec={"command": cmd}))  # type: ignore[arg-type]
            if self.secure:
                self.admin.store.ensure_role(f"balsam-site-{site}", site_permissions(site))  # type: ignore[attr-defined]
                self.admin.store.ensure_user(f"site-{site}", roles=[f"balsam-site-{site}"])  # type: ignore[attr-defined]
            SiteConfig(path=path, name=site, store_url=self.url_for(f"site-{site}"), namespace=site).save()
        if self.secure:
            self.admin.store.ensure_role("balsam-user-alice", user_permissions(SITES))  # type: ignore[attr-defined]
            self.admin.store.ensure_user("alice", roles=["balsam-user-alice"])  # type: ignore[attr-defined]
        for site in SITES:
            path = self.root / site
            argv = [sys.executable, "-c", CLI, "up", "--site", str(path), "--store", self.url_for(f"site-{site}"),
                    "--nodes", str(nodes), "--cpus", str(cpus), "--lease-ttl", str(LEASE_TTL)]
            log = open(path / "logs" / "up.out", "ab")  # noqa: SIM115 - Popen keeps its own copy
            try:
                self.procs[site] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, env=bench_env(), cwd=str(path))
            finally:
                log.close()
        self.client_url = self.url_for("alice")
        apis.use(store_url=self.client_url)  # the client: a store URL and credentials, no site directory
        self.wait_ready(nodes)

    def wait_ready(self, nodes: int, timeout: float = 120.0) -> None:
        assert self.admin is not None
        deadline = time.monotonic() + timeout
        for site in SITES:
            while len(self.admin.list(apis.Node, site)[0]) < nodes or \
                    self.admin.store.get(f"/leases/controller-manager/{site}") is None:
                if self.procs[site].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"site {site} did not start: {self.tail(site)}")
                time.sleep(0.05)

    def tail(self, site: str, n: int = 3000) -> str:
        out = []
        for f in sorted(p for p in (self.root / site / "logs").rglob("*") if p.is_file()):
            with contextlib.suppress(OSError):
                out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-n:]}")
        return "\n".join(out)

    def tracebacks(self) -> int:
        n = 0
        for site in SITES:
            for f in (p for p in (self.root / site / "logs").rglob("*") if p.is_file()):
                with contextlib.suppress(OSError):
                    n += f.read_text(errors="replace").count("Traceback")
        return n

    def finished(self) -> int:
        assert self.admin is not None
        return sum(self.admin.index_count(Job, "state", "JOB_FINISHED", s) for s in SITES)

    def failed(self) -> int:
        assert self.admin is not None
        return sum(self.admin.index_count(Job, "state", "FAILED", s) for s in SITES)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(2)  # SIGINT: up stops its manager and agents
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        apis._config.reset()
        if self.admin is not None:
            self.admin.store.close()


@contextlib.contextmanager
def two_sites(secure: bool, nodes: int = 2) -> Iterator[TwoSites]:
    with tempfile.TemporaryDirectory(prefix="balsam-sites-", dir=site_parent()) as d, \
            EtcdCluster.start(3 if secure else 1, auth=secure, timeout=60, heartbeat_ms=HEARTBEAT_MS,
                              election_ms=ELECTION_MS) as cluster:
        sites = TwoSites(cluster, Path(d), secure)
        try:
            sites.start(nodes=nodes)
            yield sites
        finally:
            sites.stop()


class StateClock:
    """Watches both sites' jobs (as root) and keeps every state change's ``lastUpdate``."""

    def __init__(self, sites: TwoSites) -> None:
        self.registry = Registry(st.open_store(sites.cluster.url))
        self.times: list[float] = []
        self._stop = threading.Event()
        self._watches = [self.registry.watch(Job, s) for s in SITES]
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self._watches]
        for t in self._threads:
            t.start()

    def _run(self, watch: Any) -> None:
        last: dict[str, str] = {}
        while not self._stop.is_set():
            try:
                events = watch.poll(0.2)
            except st.StoreError:
                return
            for ev in events:
                job = ev.object
                state = str(job.status.state)
                if ev.type != "DELETED" and last.get(job.name) != state and isinstance(job.status.last_update, datetime):
                    last[job.name] = state
                    self.times.append(job.status.last_update.timestamp())

    def longest_gap(self, since: float, until: float) -> float:
        pts = sorted([since, *[t for t in self.times if since <= t <= until]])
        return max((b - a for a, b in zip(pts, pts[1:], strict=False)), default=0.0)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for w in self._watches:
            w.close()
        self.registry.store.close()


def submit(n: int, prefix: str, app: str = "run", parents_chain: bool = False) -> list[Job]:
    """``n`` jobs per site, created by the client by site name (one bulk_create per site)."""
    out: list[Job] = []
    for site in SITES:
        names = [f"{prefix}-{site[:3]}-{i:05d}" for i in range(n)]
        jobs = [Job(name=name, app_id=app, site_name=site, workdir=f"{prefix}/{name}",
                    parent_ids=[names[i - 1]] if parents_chain and i else [])
                for i, name in enumerate(names)]
        out += Job.objects.bulk_create(jobs)
    return out


def gather(jobs: list[Job], timeout: float) -> tuple[int, int]:
    """(finished, errors) as the client sees them through ``as_completed``."""
    done = errors = 0
    try:
        for job in Job.objects.as_completed(jobs, timeout=timeout):
            if job.state == "JOB_FINISHED":
                done += 1
            else:
                errors += 1
    except Exception:  # noqa: BLE001 - what a user would see: counted, the run goes on
        errors += 1
    return done, errors


def e2e(sites: TwoSites, n: int, prefix: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    jobs = submit(n // 2, prefix)
    done, errors = gather(jobs, timeout=120 + n)
    return {"jobs": len(jobs), "seconds": time.perf_counter() - t0, "finished": done, "errors": errors}


def chain(sites: TwoSites, n: int, prefix: str) -> dict[str, Any]:
    jobs = submit(n, prefix, app="stamp", parents_chain=True)
    done, errors = gather(jobs, timeout=120 + 2 * n)
    hops: list[float] = []
    for site in SITES:
        names = [j.name for j in jobs if j.metadata.namespace == site]
        stamps = [(float((sites.data(site) / prefix / m / "start").read_text()),
                   float((sites.data(site) / prefix / m / "end").read_text())) for m in names]
        hops += [(stamps[i][0] - stamps[i - 1][1]) * 1000 for i in range(1, len(stamps))]
    return {"hops_ms": hops, "p50_ms": pct(hops, 0.5), "p99_ms": pct(hops, 0.99), "errors": errors,
            "finished": done}


def runs_per_job(sites: TwoSites, jobs: list[Job], prefix: str) -> tuple[int, int]:
    """(jobs that never ran, jobs that ran more than once), from each workdir's ``runs``."""
    never = twice = 0
    for job in jobs:
        f = sites.data(job.metadata.namespace) / prefix / job.name / "runs"
        lines = len(f.read_text().splitlines()) if f.exists() else 0
        never += lines == 0
        twice += lines > 1
    return never, twice


def failover(sites: TwoSites, n: int, prefix: str, kill: str | None) -> dict[str, Any]:
    """A run of ``n`` jobs; a third of the way through, SIGKILL the client's etcd member
    (``kill="in-use"``) or the Raft leader (``"leader"``), or nothing (None)."""
    clock = StateClock(sites)
    out: dict[str, Any] = {"kill": kill}
    try:
        base = sites.finished()
        t0 = time.time()
        jobs = submit(n // 2, prefix)
        result: dict[str, tuple[int, int]] = {}
        waiter = threading.Thread(target=lambda: result.__setitem__("r", gather(jobs, timeout=180 + n)))
        waiter.start()
        t_kill = t0
        victim = None
        if kill is not None:
            deadline = time.monotonic() + 120
            while sites.finished() - base < len(jobs) // 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            if kill == "leader":
                victim = sites.cluster.leader()
            else:
                client = apis.default_registry().store
                victim = sites.cluster.member_at(client._client.endpoint_in_use.netloc)  # type: ignore[attr-defined]
            t_kill = time.time()
            victim.kill()
        waiter.join()
        t_end = time.time()
        done, errors = result.get("r", (0, 1))
        never, twice = runs_per_job(sites, jobs, prefix)
        time.sleep(0.5)  # the last events reach the clock's watch
        out.update(jobs=len(jobs), finished=done, client_errors=errors, never_ran=never, ran_twice=twice,
                   failed=sites.failed(), pause_s=clock.longest_gap(t_kill, t_end),
                   victim=victim.name if victim else None)
        if victim is not None:
            victim.restart(30)  # whole again for the next run
    finally:
        clock.close()
    return out


def _plot(result: Result, fig: Any) -> None:
    ax = fig.subplots(1, 1)
    for key, color in (("baseline", "#3b75af"), ("secure", "#e1812c")):
        hops = sorted(result.series.get(key, {}).get("hops_ms", []))
        if hops:
            ax.plot(hops, [(i + 1) / len(hops) for i in range(len(hops))], label=key, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("parent exit → child start (ms, log)")
    ax.set_ylabel("fraction of hops")
    ax.set_title("two sites: DAG hop latency, 1 plain member vs 3 members TLS+auth")
    ax.legend(fontsize=7)


@scenario("sites", help="two sites × two agents on a 3-member TLS+auth etcd vs one plain member; failover pause",
          plot=_plot, in_default_run=False)
def run_sites(ctx: Context) -> Result:
    if not etcd_available():
        raise Skip("etcd is not installed")
    n = ctx.pick(tiny=20, small=200, default=1_000, large=4_000)
    hops = ctx.pick(tiny=4, small=30, default=100, large=200)
    res = Result("sites", inputs={
        "jobs": n, "chain_per_site": hops, "sites": f"2 (polaris, aurora), each balsamctl up --nodes 2 --cpus 16 --lease-ttl {LEASE_TTL}",
        "baseline": "the same on one plain etcd member (no TLS, no auth), same run",
        "secure": "3 etcd members, TLS with client certificates, auth on, a role per site and per client",
        "raft": "etcd's defaults: --heartbeat-interval 100 --election-timeout 1000 (both stores)",
        "command": RUN, "failover": "SIGKILL of the client's member / the Raft leader a third of the way through",
    })
    per: dict[str, dict[str, Any]] = {}
    for key, secure in (("baseline", False), ("secure", True)):
        with two_sites(secure) as sites:
            ctx.log(f"{key}: warm-up")
            e2e(sites, 20, "warm")
            ctx.log(f"{key}: {n} jobs over two sites, twice (the first run warms the sites' caches and connections)")
            per[key] = {"e2e_first": e2e(sites, n, "e2e1"), "e2e": e2e(sites, n, "e2e")}
            ctx.log(f"{key}: {per[key]['e2e']['jobs'] / per[key]['e2e']['seconds']:.0f} jobs/s; chain of {hops} per site")
            per[key]["chain"] = chain(sites, hops, "chain")
            if secure:
                for kill in (None, "in-use", "leader"):
                    ctx.log(f"secure: failover run of {n} jobs, kill {kill or 'nothing'}")
                    per[key][f"fail-{kill or 'none'}"] = failover(sites, n, f"f{kill or 'none'}", kill)
                per[key]["tracebacks"] = sites.tracebacks()
    b, s = per["baseline"], per["secure"]
    res.add("baseline_jobs_per_s", b["e2e"]["jobs"] / b["e2e"]["seconds"], "jobs/s",
            f"e2e, second {n} jobs, 1 plain member", baseline=True)
    res.add("baseline_jobs_per_s_first", b["e2e_first"]["jobs"] / b["e2e_first"]["seconds"], "jobs/s",
            f"e2e, first {n} jobs, 1 plain member", baseline=True)
    res.add("secure_jobs_per_s_first", s["e2e_first"]["jobs"] / s["e2e_first"]["seconds"], "jobs/s",
            f"e2e, first {n} jobs, 3 members TLS+auth", ratio_to="baseline_jobs_per_s_first", ratio_unit="× baseline")
    res.add("baseline_hop_p50_ms", b["chain"]["p50_ms"], "ms", "DAG hop p50, 1 plain member", baseline=True)
    res.add("baseline_hop_p99_ms", b["chain"]["p99_ms"], "ms", "DAG hop p99, 1 plain member", baseline=True)
    res.add("secure_jobs_per_s", s["e2e"]["jobs"] / s["e2e"]["seconds"], "jobs/s",
            f"e2e, second {n} jobs, 3 members TLS+auth", ratio_to="baseline_jobs_per_s", ratio_unit="× baseline",
            target=">= " + str(0.7 * b["e2e"]["jobs"] / b["e2e"]["seconds"]))
    res.add("secure_hop_p50_ms", s["chain"]["p50_ms"], "ms", "DAG hop p50, 3 members TLS+auth",
            ratio_to="baseline_hop_p50_ms", ratio_unit="× baseline", target="<= " + str(1.3 * b["chain"]["p50_ms"]))
    res.add("secure_hop_p99_ms", s["chain"]["p99_ms"], "ms", "DAG hop p99, 3 members TLS+auth",
            ratio_to="baseline_hop_p99_ms", ratio_unit="× baseline", target="<= " + str(1.3 * b["chain"]["p99_ms"]))
    res.add("gap_no_kill_s", s["fail-none"]["pause_s"], "s", "longest time without a state change, no kill",
            baseline=True)
    for kill in ("in-use", "leader"):
        f = s[f"fail-{kill}"]
        res.add(f"pause_{kill.replace('-', '_')}_s", f["pause_s"], "s",
                f"failover pause, {kill} member killed ({f['victim']})", target="<= 3",
                ratio_to="gap_no_kill_s", ratio_unit="× undisturbed gap")
        bad = f["client_errors"] + f["failed"]
        res.add(f"errors_{kill.replace('-', '_')}", bad, "errors", f"errors the client saw + FAILED jobs ({kill})",
                target="<= 0")
        res.add(f"lost_{kill.replace('-', '_')}", f["jobs"] - f["finished"] + f["never_ran"], "jobs",
                f"jobs not finished or never run ({kill})", target="<= 0")
        res.add(f"twice_{kill.replace('-', '_')}", f["ran_twice"], "jobs", f"jobs run more than once ({kill})",
                target="<= 0")
    res.add("tracebacks", s["tracebacks"], "lines", "tracebacks in the sites' logs (secure runs)", target="<= 0")
    res.series["baseline"] = {"hops_ms": b["chain"]["hops_ms"]}
    res.series["secure"] = {"hops_ms": s["chain"]["hops_ms"]}
    res.series["runs"] = {k: {kk: vv for kk, vv in v.items() if kk != "hops_ms"} if isinstance(v, dict) else v
                          for k, v in s.items() if k != "chain"}
    return res
