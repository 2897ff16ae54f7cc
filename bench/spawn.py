"""Scenario ``spawn`` (issue 5 #1): the physical limit — ``/bin/true`` launches per second.

Every other throughput figure is divided by this, measured in the same run: import
``measure_spawn_rate`` (or ``spawn_limits``) and call it inside your scenario.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ._harness import Context, Result, scenario

TRUE = ("/bin/true",)

# REFERENCE.md §3, measured earlier on this machine.
REFERENCE_SEQUENTIAL = 1700.0
REFERENCE_TWO_IN_FLIGHT = 3000.0


def measure_spawn_rate(seconds: float = 2.0, in_flight: int = 1, argv: Sequence[str] = TRUE) -> float:
    """Launches per second of ``subprocess.Popen(argv)`` + ``wait()`` for about ``seconds``,
    keeping ``in_flight`` processes running at once (1: strictly sequential)."""
    if in_flight < 1:
        raise ValueError("in_flight must be >= 1")
    cmd = list(argv)
    running: deque[subprocess.Popen[bytes]] = deque()
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        while len(running) < in_flight:
            running.append(subprocess.Popen(cmd))
        running.popleft().wait()
        done += 1
    while running:
        running.popleft().wait()
        done += 1
    return done / (time.perf_counter() - t0)


def spawn_limits(seconds: float = 1.0, rounds: int = 1) -> dict[str, float]:
    """``{"sequential": rate, "in_flight_2": rate}`` (median over ``rounds`` alternating rounds)."""
    seq, par = [], []
    for _ in range(rounds):
        seq.append(measure_spawn_rate(seconds, 1))
        par.append(measure_spawn_rate(seconds, 2))
    return {"sequential": statistics.median(seq), "in_flight_2": statistics.median(par)}


def _plot(result: Result, fig: Any) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    names = [("sequential", "sequential"), ("in_flight_2", "2 in flight")]
    vals = [result.value(n) or 0 for n, _ in names]
    ax1.bar([lbl for _, lbl in names], vals, color=["#999999", "#3b75af"])
    refs = [REFERENCE_SEQUENTIAL, REFERENCE_TWO_IN_FLIGHT]
    ax1.scatter([lbl for _, lbl in names], refs, marker="_", s=900, color="red", label="REFERENCE.md §3", zorder=3)
    for i, v in enumerate(vals):
        ax1.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=9)
    ax1.set_ylabel("launches / s")
    ax1.set_title("/bin/true: Popen + wait")
    ax1.legend(fontsize=8, loc="lower right")
    rounds = result.series.get("rounds", {})
    for key, lbl in names:
        ys = rounds.get(key, [])
        ax2.plot(range(1, len(ys) + 1), ys, "o-", label=lbl)
    ax2.set_xlabel("round")
    ax2.set_ylabel("launches / s")
    ax2.set_title("each round")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)


@scenario("spawn", help="the physical limit: /bin/true launches per second, sequential and 2 in flight",
          plot=_plot)
def run_spawn(ctx: Context) -> Result:
    seconds = ctx.pick(tiny=0.1, small=0.5, default=1.0, large=3.0)
    rounds = ctx.pick(tiny=1, small=3, default=5, large=5)
    res = Result("spawn", inputs={"argv": list(TRUE), "seconds_per_round": seconds, "rounds": rounds,
                                  "method": "subprocess.Popen(argv) + wait(); rounds alternate sequential "
                                            "and 2-in-flight; figure = median of the rounds"})
    seq: list[float] = []
    par: list[float] = []
    for i in range(rounds):
        seq.append(measure_spawn_rate(seconds, 1))
        par.append(measure_spawn_rate(seconds, 2))
        ctx.log(f"round {i + 1}/{rounds}: sequential {seq[-1]:,.0f}/s, 2 in flight {par[-1]:,.0f}/s")
    res.series["rounds"] = {"sequential": seq, "in_flight_2": par}
    res.add("sequential", statistics.median(seq), "launches/s", "Popen+wait, sequential", baseline=True,
            reference=REFERENCE_SEQUENTIAL, min=min(seq), max=max(seq))
    res.add("in_flight_2", statistics.median(par), "launches/s", "Popen+wait, 2 in flight",
            ratio_to="sequential", ratio_unit="× sequential", reference=REFERENCE_TWO_IN_FLIGHT,
            min=min(par), max=max(par))
    return res
