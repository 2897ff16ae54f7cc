"""A site run by ``balsamctl up`` for the scenarios that push jobs through the whole system
(e2e, dag, parsl): a fresh site directory on a fresh store, ``up`` as a child process (which
starts the controller manager and the node agents), the pids of those processes for CPU and
memory accounting (and py-spy), and helpers to create jobs and wait for them.

Nothing here polls the system under test more than a benchmark must: waiting for N jobs to
finish reads one index count (``Store.count``, no job decoded) every ``poll`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import store as st
from apis import App, Job, JobState, Node, ObjectMeta, Registry, Site, SiteConfig, SiteSpec

from ._harness import REPO_ROOT, StoreTarget

CLI = "from kubectl_like.cli import main; main()"
#: Where benchmark sites (job workdirs) go: this variable, else tmpfs (/dev/shm) when writable.
SITE_DIR_ENV = "BALSAM_BENCH_SITE_DIR"
CREATE_BATCH = 5000  # jobs per create_many (one store transaction each)
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --- /proc accounting ------------------------------------------------------------------


def proc_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``: ``self`` (user+sys) and ``children`` (user+sys of its reaped
    children: for a node agent, the jobs it ran). Zeros when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return {"self": 0.0, "children": 0.0}
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return {"self": (utime + stime) / CLK_TCK, "children": (cutime + cstime) / CLK_TCK}


def proc_rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in MiB (zeros when gone)."""
    out = {"rss": 0.0, "peak": 0.0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["peak"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def site_processes(site: str) -> list[int]:
    """Pids of this user's processes whose command line names ``site`` (one argument)."""
    out: list[int] = []
    me = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != me:
                continue
        except OSError:
            continue
        if site in cmdline(pid):
            out.append(pid)
    return out


def parent_pid(pid: int) -> int | None:
    """``pid``'s parent, or None when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[1])


def node_agents(pids: list[int]) -> list[int]:
    """The node agents among processes running ``-m nodeagent``: not their pre-forked Python
    fork servers (a fork of the agent before it starts, with the agent's command line)."""
    found = set(pids)
    return [p for p in pids if parent_pid(p) not in found]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


# --- a site run by up ------------------------------------------------------------------


def site_parent() -> str | None:
    """The directory benchmark sites are made in (``tempfile``'s ``dir=``).

    tmpfs by default: every job makes a workdir and a ``job.out``, and on this project's VM
    (ext4 without a journal) creating an inode scans the inode table for recently deleted
    inodes (ext4's ``recently_deleted``, run only without a journal), which the test suites and
    the benchmarks themselves keep plentiful: it doubled the node agent's CPU per job (e2e:
    0.88 → 1.68 ms/job, medians of 3). That is the file system's price of a workdir, not the
    control plane's; set ``BALSAM_BENCH_SITE_DIR`` to measure sites on another file system."""
    env = os.environ.get(SITE_DIR_ENV)
    if env:
        return env
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("BALSAM_SITE_PATH", None)
    env.pop("BALSAM_STORE", None)
    return env


def site_settings() -> dict[str, Any]:
    """Settings of the benches' sites beyond the defaults: ``BENCH_AGENTS_ACQUIRE=0|1`` sets
    ``agents_acquire`` (docs/design.md, "Eighth round: agents acquire"), for A/B runs of the
    same code with node agents claiming jobs or placement binding every one."""
    v = os.environ.get("BENCH_AGENTS_ACQUIRE")
    return {} if v is None else {"agents_acquire": v.strip().lower() not in ("0", "false", "no", "off")}


def make_site(root: Path, target: StoreTarget, namespace: str = "default") -> tuple[SiteConfig, Registry]:
    """A site directory (as ``balsamctl init`` makes it) on ``target``'s store."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    for sub in ("data", "logs", "apps"):
        (root / sub).mkdir(exist_ok=True)
    cfg = SiteConfig(path=root, name="bench", store_url=target.url, namespace=namespace, extra=site_settings())
    reg = Registry(st.open_store(target.url))
    reg.create(Site(metadata=ObjectMeta(name="bench", namespace=namespace), spec=SiteSpec(path=str(root))))
    cfg.save()
    return cfg, reg


@dataclass
class UpSite:
    """``balsamctl up`` on a fresh site. Use as a context manager (see :func:`up_site`)."""

    cfg: SiteConfig
    registry: Registry
    proc: subprocess.Popen[bytes]
    nodes: list[str]
    pids: dict[str, int] = field(default_factory=dict)  # "controllers", "agent-0", ...
    store_pid: int | None = None  # a store server of our own (etcd): its CPU counts too

    @property
    def namespace(self) -> str:
        return self.cfg.namespace

    def find_pids(self, timeout: float = 60.0) -> dict[str, int]:
        """The controller manager's and the node agents' pids: processes running ``-m
        controllers`` / ``-m nodeagent`` with this site's directory on their command line
        (``up`` may start the agents itself or through a BatchJob of the local scheduler, so
        they need not be its children)."""
        deadline = time.monotonic() + timeout
        site = str(self.cfg.path)
        while time.monotonic() < deadline:
            pids: dict[str, int] = {}
            agents: list[int] = []
            for pid in site_processes(site):
                argv = cmdline(pid)
                mod = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
                if mod == "controllers":
                    pids["controllers"] = pid
                elif mod == "nodeagent":
                    agents.append(pid)
            agents = node_agents(agents)
            if "controllers" in pids and len(agents) == len(self.nodes):
                for i, pid in enumerate(sorted(agents)):
                    pids[f"agent-{i}"] = pid
                self.pids = pids
                return pids
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"balsamctl up did not start its processes: {self.tail()}")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Every node registered and the controller manager leading."""
        deadline = time.monotonic() + timeout
        lease_key = f"/leases/controller-manager/{self.namespace}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"balsamctl up exited with {self.proc.returncode}: {self.tail()}")
            nodes = self.registry.get_many(Node, self.nodes, self.namespace)
            if all(n is not None for n in nodes) and self.registry.store.get(lease_key) is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"balsamctl up not ready after {timeout:.0f}s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        out: list[str] = []
        for f in sorted(self.cfg.logs_path.glob("*")):
            with contextlib.suppress(OSError):
                text = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {f.name}\n" + "\n".join(text))
        return "\n".join(out)

    def cpu(self) -> dict[str, dict[str, float]]:
        out = {name: proc_cpu(pid) for name, pid in self.pids.items()} | {"up": proc_cpu(self.proc.pid)}
        if self.store_pid:
            out["etcd"] = proc_cpu(self.store_pid)
        return out

    def rss(self) -> dict[str, dict[str, float]]:
        return {name: proc_rss_mib(pid) for name, pid in self.pids.items()}

    # --- jobs ---------------------------------------------------------------------

    def create_app(self, name: str, command: str) -> App:
        return self.registry.create(App(metadata=ObjectMeta(name=name, namespace=self.namespace),
                                        spec={"command": command}))  # type: ignore[arg-type]

    def create_jobs(self, jobs: Sequence[Job]) -> None:
        for i in range(0, len(jobs), CREATE_BATCH):
            self.registry.create_many(jobs[i : i + CREATE_BATCH])

    def count(self, state: JobState) -> int:
        return self.registry.index_count(Job, "state", state.value, self.namespace)

    def wait_finished(self, n: int, timeout: float, poll: float = 0.01) -> float:
        """Wait until ``n`` jobs are JOB_FINISHED; returns time.perf_counter() when seen.
        Raises when a job FAILED, ``up`` died, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        checks = 0
        while True:
            done = self.count(JobState.JOB_FINISHED)
            if done >= n:
                return time.perf_counter()
            checks += 1
            if checks % 50 == 0:
                if self.count(JobState.FAILED):
                    raise RuntimeError(f"jobs FAILED during the run: {self.tail()}")
                if self.proc.poll() is not None:
                    raise RuntimeError(f"balsamctl up exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {n} jobs finished after {timeout:.0f}s: {self.tail()}")
            time.sleep(poll)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.registry.store.close()


@contextlib.contextmanager
def up_site(root: Path, target: StoreTarget, *, nodes: int = 1, cpus: int = 64, gpus: int = 0,
            namespace: str = "default", extra_args: Sequence[str] = ()) -> Iterator[UpSite]:
    """A fresh site under ``root`` on ``target``'s store (in ``namespace``: several sites may
    share one store), run by ``balsamctl up --nodes N --cpus C`` (no ``--until-done``: it runs
    until stopped); ready when yielded. On a shared store (``--etcd-url``, the tests' etcd) the
    namespace gets a random suffix so runs never meet."""
    if target.shared:
        namespace = f"{namespace}-{uuid.uuid4().hex[:8]}"
    cfg, reg = make_site(root, target, namespace)
    argv = [sys.executable, "-c", CLI, "up", "--site", str(root), "--store", target.url,
            "--nodes", str(nodes), "--cpus", str(cpus), "--gpus", str(gpus), *extra_args]
    from kubectl_like._up import node_name

    log = open(root / "logs" / "up.out", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=bench_env(), cwd=str(root))
    site = UpSite(cfg, reg, proc, [node_name(i) for i in range(nodes)], store_pid=target.pid)
    try:
        site.wait_ready()
        site.find_pids()
        yield site
    finally:
        site.stop()
        log.close()


def warm_up(site: UpSite, app: str, n: int = 20, **spec: Any) -> None:
    """Run ``n`` jobs of ``app`` through the site before the clock starts (imports, caches,
    the first store pages): a benchmark measures the steady state, not first-call costs."""
    before = site.count(JobState.JOB_FINISHED)
    site.create_jobs([Job(metadata=ObjectMeta(name=f"warm-{app}-{i}", namespace=site.namespace),
                          spec={"app": app, "workdir": f"warm/{app}/{i}", **spec})  # type: ignore[arg-type]
                      for i in range(n)])
    site.wait_finished(before + n, timeout=120)


def py_spy_available() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else None
