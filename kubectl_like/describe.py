"""``describe`` pages, kubectl's look: a header, the spec and status as indented
``Key:  value`` blocks, a Conditions table, and an Events table.

Describers are plug-ins per kind (``DESCRIBERS``); kinds without one get the generic page.
For jobs the Conditions are those that hold now (``reasons.current_conditions``: stored, and
what only a reader can see, such as no controller manager alive), and the Events are the
job's Event objects merged with ``status.history`` (every state transition: TYPE REASON AGE
FROM MESSAGE, FROM being the component that acted, Warning for the failure states).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apis import Condition, Event, Job, Resource, utcnow

from .applier import LAST_APPLIED
from .printers import NONE, age, format_table

WARNING_STATES = {"RUN_ERROR", "RUN_TIMEOUT", "FAILED"}


def title(key: str) -> str:
    """``numNodes`` → ``Num Nodes`` (kubectl's CRD describe)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key).replace("_", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _scalar(v: Any) -> str:
    if v is None or v == "":
        return NONE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def render_block(data: Any, indent: int = 0) -> list[str]:
    """A mapping as kubectl's nested ``Key:  value`` lines, values of one level aligned."""
    pad = "  " * indent
    lines: list[str] = []
    if not isinstance(data, dict):
        return [pad + _scalar(data)]
    scalars = [k for k, v in data.items() if not isinstance(v, (dict, list)) or _is_flat_list(v)]
    width = max((len(title(k)) for k in scalars), default=0) + 3
    for k, v in data.items():
        label = title(k) + ":"
        if isinstance(v, dict):
            if not v:
                lines.append(f"{pad}{label.ljust(width)}{NONE}")
                continue
            lines.append(pad + label)
            lines.extend(render_block(v, indent + 1))
        elif isinstance(v, list) and not _is_flat_list(v):
            lines.append(pad + label)
            for item in v:
                sub = render_block(item, indent + 2)
                if sub:
                    first = sub[0]
                    lines.append("  " * (indent + 1) + "- " + first.lstrip())
                    lines.extend(sub[1:])
        elif isinstance(v, list):
            lines.append(f"{pad}{label.ljust(width)}{', '.join(_scalar(x) for x in v) or NONE}")
        else:
            text = _scalar(v)
            if "\n" in text:
                lines.append(pad + label)
                lines.extend("  " * (indent + 1) + ln for ln in text.rstrip("\n").splitlines())
            else:
                lines.append(f"{pad}{label.ljust(width)}{text}")
    return lines


def _is_flat_list(v: Any) -> bool:
    return isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)


def _kv_lines(label: str, pairs: dict[str, str], width: int) -> list[str]:
    if not pairs:
        return [f"{label.ljust(width)}{NONE}"]
    items = [f"{k}={v}" for k, v in sorted(pairs.items())]
    out = [f"{label.ljust(width)}{items[0]}"]
    out.extend(" " * width + it for it in items[1:])
    return out


def header(obj: Resource, now: datetime) -> list[str]:
    md = obj.metadata
    w = 14
    created = md.creation_timestamp
    lines = [
        f"{'Name:'.ljust(w)}{obj.name}",
        f"{'Namespace:'.ljust(w)}{md.namespace}",
    ]
    lines += _kv_lines("Labels:", md.labels, w)
    ann = {k: v for k, v in md.annotations.items() if k != LAST_APPLIED}
    lines += _kv_lines("Annotations:", ann, w)
    lines += [
        f"{'API Version:'.ljust(w)}{obj.api_version}",
        f"{'Kind:'.ljust(w)}{obj.kind}",
        f"{'Created:'.ljust(w)}{created.isoformat() if created else NONE}"
        + (f" ({age(created, now)} ago)" if created else ""),
        f"{'Generation:'.ljust(w)}{md.generation}",
        f"{'UID:'.ljust(w)}{md.uid or NONE}",
    ]
    if md.owner_references:
        lines.append(f"{'Owned By:'.ljust(w)}" + ", ".join(f"{r.kind}/{r.name}" for r in md.owner_references))
    return lines


def section(name: str, data: Any) -> list[str]:
    if not data:
        return [f"{name}:  {NONE}"]
    return [f"{name}:", *render_block(data, 1)]


def conditions_table(conditions: list[Any], now: datetime) -> list[str]:
    if not conditions:
        return [f"Conditions:  {NONE}"]
    rows = [
        [c.type, c.status, c.reason or NONE, age(c.last_transition_time, now), c.message or NONE]
        for c in conditions
    ]
    text, _ = format_table(["Type", "Status", "Reason", "Age", "Message"],
                           [["----", "------", "------", "---", "-------"], *rows])
    return ["Conditions:", *("  " + ln for ln in text.splitlines())]


def events_table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"Events:  {NONE}"]
    text, _ = format_table(["Type", "Reason", "Age", "From", "Message"],
                           [["----", "------", "----", "----", "-------"], *rows])
    return ["Events:", *("  " + ln for ln in text.splitlines())]


#: Who makes a move that carries no ``by`` (written before it existed, or by a node agent or
#: a user, which do not go through a controller).
AGENT_STATES = {"RUNNING", "RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT"}


def history_source(to_state: str, by: str | None) -> str:
    if by:
        return by
    return "node-agent" if to_state in AGENT_STATES else "user"


@dataclass
class Extra:
    """What a describer shows beyond the object: current conditions and its Events."""

    conditions: list[Condition] | None = None
    events: list[Event] = field(default_factory=list)


def describe_generic(obj: Resource, now: datetime, extra: Extra | None = None) -> list[str]:
    d = obj.to_dict()
    lines = header(obj, now)
    lines += section("Spec", d.get("spec"))
    status = dict(d.get("status") or {})
    conds = status.pop("conditions", None)
    lines += section("Status", status)
    if conds is not None:
        lines += conditions_table(getattr(getattr(obj, "status", None), "conditions", []), now)
    lines += events_table(event_rows(extra.events if extra else [], now))
    return lines


def event_rows(events: list[Event], now: datetime) -> list[list[str]]:
    rows = []
    for ev in events:
        last = ev.last_timestamp or ev.first_timestamp
        when = age(last, now)
        if ev.count > 1 and ev.first_timestamp is not None:
            when += f" (x{ev.count} over {age(ev.first_timestamp, now)})"
        rows.append([ev.type, ev.reason, when, ev.reporting_controller or NONE, " ".join(ev.message.split()) or NONE])
    return rows


def describe_job(job: Job, now: datetime, extra: Extra | None = None) -> list[str]:
    d = job.to_dict()
    s = job.status
    lines = header(job, now)
    lines += section("Spec", d.get("spec"))
    status: dict[str, Any] = {
        "state": s.state.value,
        "returnCode": s.return_code,
        "attempts": s.attempts,
        "message": s.message,
    }
    if s.placement is not None:
        p = s.placement
        status["placement"] = {
            "batchJob": p.batch_job,
            "nodes": p.nodes,
            "cpus": p.cpus,
            "gpus": p.gpus,
            "occupancy": p.occupancy,
        }
    else:
        status["placement"] = None
    for key, val in (("startTime", s.start_time), ("endTime", s.end_time), ("lastUpdate", s.last_update)):
        if val is not None:
            status[key] = val.isoformat()
    status["observedGeneration"] = s.observed_generation
    if s.exception:
        status["exception"] = s.exception
    if s.output_tail:
        status["outputTail"] = s.output_tail
    lines += ["Status:", *render_block(status, 1)]
    conds = extra.conditions if extra is not None and extra.conditions is not None else s.conditions
    lines += conditions_table(conds, now)
    timed: list[tuple[datetime, list[str]]] = []
    for ev in s.history:
        to = ev.to_state.value
        timed.append((ev.time, [
            "Warning" if to in WARNING_STATES else "Normal",
            to,
            age(ev.time, now),
            history_source(to, ev.by),
            " ".join(ev.message.split()) or NONE,
        ]))
    for e in extra.events if extra is not None else []:
        when = e.last_timestamp or e.first_timestamp or now
        timed.append((when, event_rows([e], now)[0]))
    timed.sort(key=lambda t: t[0])
    lines += events_table([row for _, row in timed])
    return lines


DESCRIBERS: dict[str, Callable[[Any, datetime, Extra | None], list[str]]] = {
    "Job": describe_job,
}


def describe(obj: Resource, now: datetime | None = None, extra: Extra | None = None) -> str:
    fn = DESCRIBERS.get(obj.KIND, describe_generic)
    return "\n".join(fn(obj, now or utcnow(), extra)) + "\n"
