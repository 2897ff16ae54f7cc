"""Scenario ``etcd-cost`` (issue 20): where the cost of TLS + auth + 3 members lies.

``sites`` measures the whole (two sites through ``up`` on one plain member vs three TLS members
with auth). This takes it apart, with the store client as the sites use it, on clusters with
the same Raft timing as ``sites`` (etcd's own 100 / 1000 ms), data on /dev/shm:

* ``plain1`` — one plain member (the **baseline**);
* ``tls1`` — one member, TLS with client certificates, no auth;
* ``auth1`` — one member, TLS + auth, the client a site user under its role (signs in by
  certificate: no token);
* ``plain3`` — three plain members (Raft: every write is replicated and fsynced three times);
* ``secure3`` — three members, TLS + auth, a site user (what ``sites`` calls *secure*);
* ``pwsimple1`` / ``pwjwt1`` — one member, TLS + auth, the same user signing in with a
  password instead: etcd's ``simple`` tokens vs JWTs (RS256; what ``EtcdCluster`` and
  ``scripts/etcd-up`` start with).

``BALSAM_ETCD_BIN=/path/to/etcd`` runs it all on another etcd build (3.4 against 3.5).

Per cluster, one client: the serial round trip of a ``get``, a ``put`` and a create txn (a
compare and three puts, as a job's create with its index keys) — p50 of 300 each — and the
rate of puts from 8 threads (the agents and controllers write concurrently) over 2 s. The
ratios to ``plain1`` say which step costs what: ``tls1``/``plain1`` is TLS, ``auth1``/``tls1``
is auth, ``plain3``/``plain1`` is Raft with three members on this machine's cores.

Then, on one plain member, the gRPC calls one job costs (etcd's ``grpc_server_handled_total``
by method over N ``/bin/true`` jobs through ``up``, after a warm-up) and the watch events sent
per job: a job's latency is those round trips times the per-call cost above.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import store as st
from apis import Job, JobState, ObjectMeta
from apis._roles import site_permissions
from store.testing import EtcdCluster, etcd_available, etcd_version

from ._harness import Context, Result, Skip, StoreTarget, scenario
from ._up import site_parent, up_site, warm_up

HEARTBEAT_MS, ELECTION_MS = 100, 1000  # as bench sites
POLL = 0.05  # s between this bench's counts while it waits for the jobs
SITE = "polaris"
#: name → (members, tls, auth, how the user signs in: certificate, or password with that token)
CLUSTERS: dict[str, tuple[int, bool, bool, str]] = {
    "plain1": (1, False, False, "cert"),
    "tls1": (1, True, False, "cert"),
    "auth1": (1, True, True, "cert"),
    "plain3": (3, False, False, "cert"),
    "secure3": (3, True, True, "cert"),
    "pwsimple1": (1, True, True, "simple"),
    "pwjwt1": (1, True, True, "jwt"),
}
PASSWORD = "etcd-cost-password"  # a throwaway cluster's


def _p50_ms(fn: Callable[[int], Any], n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _concurrent_puts(store: st.Store, prefix: str, threads: int, seconds: float) -> float:
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            store.put(f"{prefix}{k}/{i}", b"x" * 200)
            i += 1
        counts[k] = i

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def grpc_calls(endpoint: str) -> dict[str, float]:
    """etcd's own count of gRPC calls handled, by method (``/metrics`` of a plain member),
    and of watch events sent (``watch_events``)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{endpoint}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            labels, value = line[len("grpc_server_handled_total{"):].rsplit("} ", 1)
            method = next((kv.split("=", 1)[1].strip('"') for kv in labels.split(",")
                           if kv.startswith("grpc_method=")), "?")
            out[method] = out.get(method, 0.0) + float(value)
        elif line.startswith("etcd_debugging_mvcc_events_total "):
            out["watch_events"] = float(line.split()[1])
    return out


#: Seconds of an idle site over which the calls that come with no job are counted.
IDLE_SECONDS = 4.0


def calls_per_job(jobs: int) -> dict[str, float]:
    """gRPC calls per job of ``jobs`` /bin/true jobs through ``up`` (1 node) on one plain
    member, counted by etcd (after a warm-up): the round trips a job costs, by method.

    Calls that come with time rather than jobs — ``up``'s progress polling (a count per
    state every 0.25 s) and this bench's own wait — are counted too; ``idle_<method>`` is
    that rate (per second, the site idle, this bench polling as during the run) and
    ``pipeline_<method>`` the calls per job less it (what the controller manager and agent
    spend per job)."""
    with EtcdCluster.start(1, timeout=60, prefix="balsam-cost-calls.", heartbeat_ms=HEARTBEAT_MS,
                           election_ms=ELECTION_MS) as cluster, \
            tempfile.TemporaryDirectory(prefix="balsam-cost-", dir=site_parent()) as d:
        member = cluster.members[0]
        target = StoreTarget("etcd", cluster.plain_url, pid=member.proc.pid if member.proc else None)
        with up_site(Path(d) / "site", target, nodes=1, cpus=16) as site:
            site.create_app("true", "/bin/true")
            warm_up(site, "true", resources={"nodePackingCount": 16})
            before = grpc_calls(member.endpoint)
            t0 = time.monotonic()
            done0 = site.count(JobState.JOB_FINISHED)
            site.create_jobs([Job(metadata=ObjectMeta(name=f"c{i}", namespace=site.namespace),
                                  spec={"app": "true", "workdir": f"c/{i}",  # type: ignore[arg-type]
                                        "resources": {"nodePackingCount": 16}}) for i in range(jobs)])
            site.wait_finished(done0 + jobs, timeout=300 + jobs, poll=POLL)
            time.sleep(1.0)  # the last writes' echoes (informers, watches) settle
            after = grpc_calls(member.endpoint)
            elapsed = time.monotonic() - t0
            idle0 = grpc_calls(member.endpoint)
            t1 = time.monotonic()
            while time.monotonic() - t1 < IDLE_SECONDS:  # poll as wait_finished did
                site.count(JobState.JOB_FINISHED)
                time.sleep(POLL)
            idle1 = grpc_calls(member.endpoint)
            idle_s = time.monotonic() - t1
    out = {k: (after.get(k, 0.0) - before.get(k, 0.0)) / jobs for k in sorted(after)
           if after.get(k, 0.0) != before.get(k, 0.0)}
    for k in sorted(idle1):
        rate = (idle1.get(k, 0.0) - idle0.get(k, 0.0)) / idle_s
        if k in out and k != "watch_events":
            out[f"idle_{k}"] = rate
            out[f"pipeline_{k}"] = max(0.0, out[k] - rate * elapsed / jobs)
    return out


def measure(name: str, members: int, tls: bool, auth: bool, n: int, seconds: float,
            sign_in: str = "cert") -> dict[str, float]:
    token = sign_in if sign_in != "cert" else "jwt"
    with EtcdCluster.start(members, tls=tls, auth=auth, timeout=60, prefix=f"balsam-cost-{name}.",
                           heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS, auth_token=token) as cluster, \
            tempfile.TemporaryDirectory(prefix="balsam-cost-pw-") as pw_dir:
        url = cluster.url
        if auth:
            admin = st.open_store(cluster.url)
            try:
                admin.ensure_role(f"balsam-site-{SITE}", site_permissions(SITE))  # type: ignore[attr-defined]
                admin.ensure_user(f"site-{SITE}", password=PASSWORD if sign_in != "cert" else None,  # type: ignore[attr-defined]
                                  roles=[f"balsam-site-{SITE}"])
            finally:
                admin.close()
            if sign_in == "cert":
                url = cluster.url_for(f"site-{SITE}")
            else:  # a certificate whose CN is no user: the password's token names the user
                pw = Path(pw_dir) / "pw"
                pw.write_text(PASSWORD)
                url = cluster.url_for("no-user") + f"&user=site-{SITE}&password-file={pw}"
        s = st.open_store(url)
        try:
            prefix = f"/registry/jobs/{SITE}/"
            s.put(f"{prefix}warm", b"x")  # connections and TLS sessions made
            value = b"x" * 800  # about a job
            out = {
                "get_ms": _p50_ms(lambda i: s.get(f"{prefix}warm"), n),
                "put_ms": _p50_ms(lambda i: s.put(f"{prefix}p{i}", value), n),
                "txn_ms": _p50_ms(lambda i: s.txn(
                    [st.Compare.absent(f"{prefix}t{i}")],
                    [st.Put(f"{prefix}t{i}", value), st.Put(f"/index/jobs/state/{SITE}/READY/t{i}", b""),
                     st.Put(f"/index/jobs/app/{SITE}/a/t{i}", b"")]), n),
                "puts_per_s_8": _concurrent_puts(s, f"{prefix}c", 8, seconds),
            }
        finally:
            s.close()
    return out


@scenario("etcd-cost", backends=("etcd",), default_backend="etcd", in_default_run=False,
          help="round trips and write rate on 1/3 members, plain/TLS/TLS+auth: where the sites cost lies")
def etcd_cost(ctx: Context) -> Result:
    if not etcd_available():
        raise Skip("etcd is not installed")
    n = ctx.pick(tiny=30, small=100, default=300, large=1000)
    seconds = ctx.pick(tiny=0.5, small=1.0, default=2.0, large=5.0)
    res = Result("etcd-cost", inputs={"serial_calls": n, "concurrent_seconds": seconds, "threads": 8,
                                      "heartbeat_ms": HEARTBEAT_MS, "election_ms": ELECTION_MS,
                                      "clusters": {k: {"members": m, "tls": t, "auth": a, "sign_in": u}
                                                   for k, (m, t, a, u) in CLUSTERS.items()},
                                      "etcd": etcd_version(),
                                      "cpus": os.cpu_count()})
    figures: dict[str, dict[str, float]] = {}
    for name, (members, tls, auth, sign_in) in CLUSTERS.items():
        ctx.log(f"etcd-cost: {name} ({members} member(s), tls={tls}, auth={auth}, sign-in {sign_in})")
        figures[name] = measure(name, members, tls, auth, n, seconds, sign_in)
        ctx.log(f"etcd-cost: {name}: {figures[name]}")
    labels = {"get_ms": ("get round trip p50", "ms"), "put_ms": ("put round trip p50", "ms"),
              "txn_ms": ("create txn (compare + 3 puts) p50", "ms"), "puts_per_s_8": ("puts/s from 8 threads", "/s")}
    for metric, (label, unit) in labels.items():
        for name in CLUSTERS:
            res.add(f"{name}_{metric}", figures[name][metric], unit, f"{name}: {label}", backend="etcd",
                    baseline=name == "plain1",
                    ratio_to=None if name == "plain1" else f"plain1_{metric}", ratio_unit="x plain1")
    res.series["figures"] = figures
    jobs = ctx.pick(tiny=50, small=200, default=500, large=2000)
    ctx.log(f"etcd-cost: gRPC calls per job over {jobs} /bin/true jobs through up on one plain member")
    per_job = calls_per_job(jobs)
    ctx.log(f"etcd-cost: calls per job {per_job}")
    not_unary = ("watch_events", "Watch", "LeaseKeepAlive")
    unary = sum(v for k, v in per_job.items() if k not in not_unary and "_" not in k)
    res.add("unary_calls_per_job", unary, "calls",
            "unary gRPC calls (Range, Txn, Put, ...) per job, up's and this bench's polling included",
            backend="etcd")
    pipeline = sum(v for k, v in per_job.items() if k.startswith("pipeline_") and k[9:] not in not_unary)
    res.add("pipeline_unary_calls_per_job", pipeline, "calls",
            "... less the calls an idle site makes per second (up's progress polling, this bench's wait)",
            backend="etcd")
    res.add("watch_events_per_job", per_job.get("watch_events"), "events", "watch events sent per job",
            backend="etcd")
    res.series["calls_per_job"] = per_job
    res.inputs["calls_jobs"] = jobs
    return res


__all__ = ["CLUSTERS", "etcd_cost", "measure"]
