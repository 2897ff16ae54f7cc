"""The benchmark harness: scenario registry, run context, result model, table, JSON and plot.

A scenario is a function ``fn(ctx: Context) -> Result`` registered with ``@scenario(name)`` in
any module ``bench/<module>.py`` (discovered by name: modules starting with ``_`` are the
harness's own). The harness runs it, prints the result as a rich table, writes
``<out>/<name>.json`` and saves ``<out>/<name>.png``. See bench/README.md for the API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import math
import os
import pkgutil
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

SIZES = ("tiny", "small", "default", "large")
BACKENDS = ("sqlite", "etcd")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

Size = Literal["tiny", "small", "default", "large"]


class Skip(Exception):
    """Raise from a scenario when it cannot run here (a missing optional package...)."""


class BackendUnavailable(Skip):
    """A store backend cannot be provided (no etcd binary); the scenario goes on without it."""


# --- results ---------------------------------------------------------------------------


@dataclass
class Target:
    """A goal such as ``>= 20000`` (jobs/s) or ``<= 200`` (ms)."""

    op: Literal[">=", "<="]
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        text = text.strip()
        for op in (">=", "<="):
            if text.startswith(op):
                return cls(op, float(text[len(op):].replace(",", "").replace("_", "")))  # type: ignore[arg-type]
        raise ValueError(f"target {text!r} must start with >= or <=")

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value >= self.value if self.op == ">=" else value <= self.value

    def __str__(self) -> str:
        return f"{self.op} {fmt_num(self.value)}"


@dataclass
class Figure:
    """One measured number. ``name`` is unique per backend; ``key`` = ``backend.name``."""

    name: str
    value: float | None
    unit: str
    label: str = ""
    backend: str | None = None
    baseline: bool = False  # this figure is a baseline others are divided by
    ratio_to: str | None = None  # key of the baseline figure this one is divided by
    ratio: float | None = None
    ratio_unit: str = ""  # what the ratio means, e.g. "jobs per raw put"
    target: Target | None = None
    reference: float | None = None  # the figure measured earlier (REFERENCE.md §3), for context
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.backend}.{self.name}" if self.backend else self.name

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "label": self.label or self.name,
            "backend": self.backend,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
        }
        if self.ratio_to:
            d.update(ratio_to=self.ratio_to, ratio=self.ratio, ratio_unit=self.ratio_unit)
        if self.target is not None:
            d.update(target=str(self.target), met=self.met)
        if self.reference is not None:
            d["reference"] = self.reference
        if self.extra:
            d["extra"] = self.extra
        return d


@dataclass
class Result:
    """What a scenario returns: its inputs, every figure, baselines, ratios, targets, notes,
    and free-form ``series`` (lists of numbers for the plot and the JSON)."""

    scenario: str
    inputs: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    status: Literal["ok", "skipped", "error"] = "ok"
    started: str = ""
    elapsed_s: float = 0.0
    json_path: Path | None = None
    png_path: Path | None = None

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        label: str = "",
        *,
        backend: str | None = None,
        baseline: bool = False,
        ratio_to: str | None = None,
        ratio_unit: str = "",
        target: str | Target | None = None,
        reference: float | None = None,
        **extra: Any,
    ) -> Figure:
        """Record a figure. ``ratio_to`` names a baseline figure (``name`` of the same backend,
        or a full ``backend.name`` / un-backended key); the ratio is value ÷ baseline value."""
        if isinstance(target, str):
            target = Target.parse(target)
        fig = Figure(name, None if value is None else float(value), unit, label, backend, baseline,
                     None, None, ratio_unit, target, reference, extra)
        if any(f.key == fig.key for f in self.figures):
            raise ValueError(f"figure {fig.key!r} recorded twice")
        if ratio_to is not None:
            base = self.find(ratio_to, backend)
            if base is None:
                raise KeyError(f"baseline figure {ratio_to!r} not recorded (backend {backend})")
            fig.ratio_to = base.key
            if value is not None and base.value:
                fig.ratio = float(value) / base.value
        self.figures.append(fig)
        return fig

    def find(self, name: str, backend: str | None = None) -> Figure | None:
        for f in self.figures:
            if f.key == name or (f.name == name and f.backend == backend):
                return f
        return None

    def value(self, name: str, backend: str | None = None) -> float | None:
        f = self.find(name, backend)
        return None if f is None else f.value

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def backends(self) -> list[str]:
        return list(dict.fromkeys(f.backend for f in self.figures if f.backend))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "status": self.status,
            "started": self.started,
            "elapsed_s": round(self.elapsed_s, 3),
            "inputs": self.inputs,
            "machine": self.machine,
            "figures": [f.to_dict() for f in self.figures],
            "baseline": {f.key: {"value": f.value, "unit": f.unit, "label": f.label or f.name}
                         for f in self.figures if f.baseline},
            "ratios": {f.key: {"ratio": f.ratio, "of": f.key, "to": f.ratio_to, "unit": f.ratio_unit}
                       for f in self.figures if f.ratio_to},
            "targets": {f.key: {"target": str(f.target), "value": f.value, "unit": f.unit, "met": f.met}
                        for f in self.figures if f.target is not None},
            "notes": self.notes,
            "series": self.series,
            "plot": self.png_path.name if self.png_path else None,
        }


# --- registry --------------------------------------------------------------------------

PlotFn = Callable[[Result, Any], None]  # (result, matplotlib Figure)


@dataclass
class Scenario:
    name: str
    fn: Callable[[Context], Result]
    help: str = ""
    backends: tuple[str, ...] = ()  # store backends it can run on (empty: uses no store)
    default_backend: str = "sqlite"  # sqlite | etcd | both, when --backend is not given
    plot: PlotFn | None = None
    in_default_run: bool = True  # part of a bare ``python -m bench``
    module: str = ""


_REGISTRY: dict[str, Scenario] = {}
_IMPORT_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def scenario(
    name: str,
    *,
    help: str = "",
    backends: Sequence[str] = (),
    default_backend: str = "sqlite",
    plot: PlotFn | None = None,
    in_default_run: bool = True,
) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    """Register ``fn(ctx) -> Result`` as scenario ``name`` (the function is returned unchanged)."""
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"scenario {name}: unknown backend {b!r}")
    if default_backend not in (*BACKENDS, "both"):
        raise ValueError(f"scenario {name}: default_backend must be sqlite, etcd or both")

    def deco(fn: Callable[[Context], Result]) -> Callable[[Context], Result]:
        old = _REGISTRY.get(name)
        if old is not None and (old.module, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"scenario {name!r} is registered twice ({old.module} and {fn.__module__})")
        _REGISTRY[name] = Scenario(name, fn, help or (fn.__doc__ or "").strip().split("\n")[0],
                                   tuple(backends), default_backend, plot, in_default_run, fn.__module__)
        return fn

    return deco


def discover() -> dict[str, Scenario]:
    """Import every ``bench/<module>.py`` (not starting with ``_``) so it registers its scenarios.
    A module that fails to import is remembered in ``import_errors()``, not fatal."""
    global _DISCOVERED
    if not _DISCOVERED:
        import bench

        for mod in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
            if mod.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"bench.{mod.name}")
            except Exception as e:  # noqa: BLE001 - reported, other scenarios still run
                _IMPORT_ERRORS[mod.name] = f"{type(e).__name__}: {e}"
        _DISCOVERED = True
    return dict(_REGISTRY)


def import_errors() -> dict[str, str]:
    discover()
    return dict(_IMPORT_ERRORS)


# --- context ---------------------------------------------------------------------------


@dataclass
class StoreTarget:
    """A store a scenario may use: ``url``; ``shared`` when it was not made fresh for this
    scenario (an ``--etcd-url`` given by the caller), so keys must not clash with others'."""

    backend: str
    url: str
    shared: bool = False
    path: Path | None = None  # the SQLite file
    pid: int | None = None  # the store's server process (a fresh etcd), for its CPU and memory


@dataclass
class Context:
    size: Size = "default"
    backends: list[str] = field(default_factory=list)
    out: Path = RESULTS_DIR
    etcd_url: str | None = None  # use this etcd instead of starting a fresh one
    console: Console = field(default_factory=lambda: Console(stderr=True, log_path=False))
    facts: dict[str, Any] = field(default_factory=dict)  # extra machine facts (etcd version...)

    def pick(self, tiny: Any = None, small: Any = None, default: Any = None, large: Any = None) -> Any:
        """The value for the run's size (falling back to ``default``)."""
        v = {"tiny": tiny, "small": small, "default": default, "large": large}[self.size]
        return default if v is None else v

    def log(self, msg: str) -> None:
        self.console.log(msg)

    @contextlib.contextmanager
    def fresh_store(self, backend: str) -> Iterator[StoreTarget]:
        """A store nobody else uses: a new SQLite file in a temporary directory, or a newly
        started etcd (stopped afterwards). Raises BackendUnavailable when etcd is missing."""
        if backend == "sqlite":
            d = Path(tempfile.mkdtemp(prefix="balsam-bench-"))
            try:
                yield StoreTarget("sqlite", f"sqlite:///{d / 'store.db'}", path=d / "store.db")
            finally:
                shutil.rmtree(d, ignore_errors=True)
        elif backend == "etcd":
            if self.etcd_url:
                yield StoreTarget("etcd", self.etcd_url, shared=True)
                return
            from ._etcd import EtcdMissing, EtcdServer

            try:
                server = EtcdServer.start()
            except EtcdMissing as e:
                raise BackendUnavailable(str(e)) from None
            self.facts["etcd_version"] = server.version
            try:
                yield StoreTarget("etcd", server.url, pid=server.proc.pid)
            finally:
                server.stop()
        else:
            raise ValueError(f"unknown backend {backend!r}")

    def per_backend(self, result: Result, fn: Callable[[StoreTarget], None]) -> None:
        """Call ``fn(target)`` with a fresh store for each backend of the run; a backend that
        cannot be provided is skipped with a note in ``result``."""
        for b in self.backends:
            try:
                with self.fresh_store(b) as target:
                    fn(target)
            except BackendUnavailable as e:
                msg = f"{b}: skipped — {e}"
                result.note(msg)
                self.console.print(f"[yellow]{msg}[/yellow]")


# --- measurement helpers ---------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, return value) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """(median ms, every ms, last return value) of ``repeat`` calls."""
    times: list[float] = []
    out: Any = None
    for _ in range(repeat):
        s, out = timed(fn)
        times.append(s * 1000)
    return statistics.median(times), times, out


# --- machine facts ---------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_facts() -> dict[str, Any]:
    try:
        import pydantic

        pyd: str | None = pydantic.VERSION
    except ImportError:
        pyd = None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "pydantic": pyd,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# --- output ----------------------------------------------------------------------------


def fmt_num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def render_table(result: Result) -> Table:
    t = Table(title=f"bench {result.scenario}", title_justify="left", show_lines=False)
    has_backend = any(f.backend for f in result.figures)
    if has_backend:
        t.add_column("backend")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("unit")
    t.add_column("ratio to baseline", justify="right")
    t.add_column("target", justify="right")
    t.add_column("met")
    for f in result.figures:
        label = f.label or f.name
        if f.baseline:
            label = f"{label} [dim](baseline)[/dim]"
        ratio = "—" if f.ratio is None else f"{f.ratio:.3g}" + (f" {f.ratio_unit}" if f.ratio_unit else "")
        met = {None: "", True: "[green]met[/green]", False: "[red]missed[/red]"}[f.met]
        row = [label, fmt_num(f.value), f.unit, ratio, str(f.target) if f.target else "", met]
        t.add_row(*([f.backend or ""] if has_backend else []), *row)
    return t


def write_json(result: Result, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.scenario}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    tmp.replace(path)
    result.json_path = path
    return path


def default_plot(result: Result, fig: Any) -> None:
    """Horizontal bars of every figure, one panel per unit; targets as dashed lines."""
    units = list(dict.fromkeys(f.unit for f in result.figures if f.value is not None))
    if not units:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no figures", ha="center", va="center")
        ax.set_axis_off()
        return
    axes = fig.subplots(len(units), 1, squeeze=False)[:, 0]
    for ax, unit in zip(axes, units, strict=True):
        figs = [f for f in result.figures if f.unit == unit and f.value is not None]
        labels = [f"{f.backend + ': ' if f.backend else ''}{f.label or f.name}" for f in figs]
        colors = ["#999999" if f.baseline else "#3b75af" for f in figs]
        ax.barh(range(len(figs)), [f.value for f in figs], color=colors)
        ax.set_yticks(range(len(figs)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        for i, f in enumerate(figs):
            if f.target is not None:
                ax.plot([f.target.value] * 2, [i - 0.4, i + 0.4], "r--", lw=1.2)
    fig.suptitle(f"bench {result.scenario}")


def save_plot(result: Result, out: Path, plot: PlotFn | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.scenario}.png"
    fig = plt.figure(figsize=(10, 6), layout="constrained")
    try:
        (plot or default_plot)(result, fig)
        machine = result.machine
        fig.supxlabel(f"{machine.get('cpu_count')} CPUs · {machine.get('cpu_model') or ''} · "
                      f"{machine.get('date', '')} · commit {(machine.get('git_commit') or '')[:10]}",
                      fontsize=7, color="gray")
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    result.png_path = path
    return path


# --- running ---------------------------------------------------------------------------


def resolve_backends(sc: Scenario, backend: str | None) -> list[str]:
    if not sc.backends:
        return []
    want = backend or sc.default_backend
    chosen = list(BACKENDS) if want == "both" else [want]
    return [b for b in chosen if b in sc.backends]


def run_scenario(
    sc: Scenario,
    *,
    size: Size = "default",
    backend: str | None = None,
    out: Path = RESULTS_DIR,
    etcd_url: str | None = None,
    console: Console | None = None,
    plot: bool = True,
) -> Result:
    """Run one scenario, print its table, write its JSON and PNG; returns the Result (status
    ``skipped`` with the reason in ``notes`` when it raised Skip; nothing is written then)."""
    console = console or Console(stderr=True, log_path=False)
    ctx = Context(size=size, backends=resolve_backends(sc, backend), out=out, etcd_url=etcd_url, console=console)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    console.rule(f"bench {sc.name} (size {size}{', ' + '+'.join(ctx.backends) if ctx.backends else ''})")
    if hasattr(os, "getloadavg"):  # other work on the machine skews every figure: record it
        ctx.facts["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    try:
        result = sc.fn(ctx)
    except Skip as e:
        console.print(f"[yellow]{sc.name}: skipped — {e}[/yellow]")
        return Result(sc.name, status="skipped", notes=[str(e)], started=started)
    result.elapsed_s = time.perf_counter() - t0
    result.started = started
    result.inputs.setdefault("size", size)
    result.inputs.setdefault("backends", ctx.backends)
    result.machine = {**machine_facts(), **ctx.facts}
    busy = max(ctx.facts.get("loadavg_at_start", [0])[0], (result.machine.get("loadavg_at_end") or [0])[0])
    if busy > (os.cpu_count() or 1):
        result.note(f"the machine was busy (1-min load average up to {busy:.1f} on {os.cpu_count()} CPUs): "
                    "throughput figures are pessimistic; compare ratios, or rerun on a quiet machine")
    Console(width=None if sys.stdout.isatty() else 140).print(render_table(result))
    for n in result.notes:
        console.print(f"  note: {n}")
    if plot:
        save_plot(result, out, sc.plot)
    write_json(result, out)
    console.print(f"  wrote {result.json_path}" + (f" and {result.png_path.name}" if result.png_path else ""))
    return result


def run(
    names: Sequence[str] = (),
    *,
    size: Size = "default",
    backend: str | None = None,
    out: Path | str = RESULTS_DIR,
    etcd_url: str | None = None,
    console: Console | None = None,
    plot: bool = True,
    keep_going: bool = True,
) -> dict[str, Result]:
    """Run scenarios by name (all of the default run when ``names`` is empty). A scenario that
    raises is reported (status ``error``) and the others still run unless ``keep_going`` is False."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    if backend not in (None, "both", *BACKENDS):
        raise ValueError("backend must be sqlite, etcd or both")
    reg = discover()
    console = console or Console(stderr=True, log_path=False)
    unknown = [n for n in names if n not in reg]
    if unknown:
        broken = {m: e for m, e in _IMPORT_ERRORS.items()}
        hint = f" (modules that failed to import: {broken})" if broken else ""
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(reg))}{hint}")
    chosen = list(names) or [n for n, s in reg.items() if s.in_default_run]
    results: dict[str, Result] = {}
    for n in chosen:
        try:
            results[n] = run_scenario(reg[n], size=size, backend=backend, out=Path(out), etcd_url=etcd_url,
                                      console=console, plot=plot)
        except Exception:
            if not keep_going:
                raise
            console.print(f"[red]{n}: failed[/red]")
            console.print(traceback.format_exc())
            results[n] = Result(n, status="error", notes=[traceback.format_exc(limit=5)])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from store.process import tune_gc

    tune_gc("bench")  # the process's GC settings (store/process.py), as the CLI and the manager set theirs

    reg = discover()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="balsamctl benchmarks: each scenario prints a table and writes <out>/<name>.json and .png",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"scenarios to run (default: all of {', '.join(n for n, s in reg.items() if s.in_default_run)})")
    p.add_argument("--size", choices=SIZES, default="default", help="problem size (tiny is for tests)")
    p.add_argument("--backend", choices=(*BACKENDS, "both"), default=None,
                   help="store backend(s) for scenarios that use a store (default: the scenario's own)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results directory (default {RESULTS_DIR})")
    p.add_argument("--etcd-url", default=None, help="use this etcd instead of starting a fresh one per scenario")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--list", action="store_true", help="list scenarios and exit")
    a = p.parse_args(argv)
    if a.list:
        for n, s in sorted(reg.items()):
            b = f" [{'/'.join(s.backends)}; default {s.default_backend}]" if s.backends else ""
            print(f"{n:14s} {s.help}{b}")
        for m, e in import_errors().items():
            print(f"{'(' + m + ')':14s} failed to import: {e}", file=sys.stderr)
        return 0
    try:
        results = run(a.scenarios, size=a.size, backend=a.backend, out=a.out, etcd_url=a.etcd_url,
                      plot=not a.no_plot)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 1 if any(r.status == "error" for r in results.values()) else 0
