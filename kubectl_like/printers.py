"""Output printers, chosen by ``-o`` (kubectl's set): the default table, ``wide``, ``yaml``,
``json``, ``name``, ``jsonpath=TEMPLATE``, ``custom-columns=HDR:PATH,...``.

A printer is a plug-in: a class registered under its ``-o`` name with :func:`printer`.
Commands never branch on the output format; they hand objects to
``printer_for(output, kind, ...)``. Each printer renders a whole result (``render``) and,
for ``get -w``, one object at a time (``render_event``) with the same look.

Table columns are declared per kind in ``COLUMNS`` (a new kind adds its columns there).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from apis import (
    API_VERSION,
    TERMINAL,
    BatchJob,
    Event,
    Job,
    Node,
    Resource,
    Site,
    TransferTask,
    utcnow,
)
from apis import App as AppKind
from apis._reasons import PRIORITY as REASON_PRIORITY

from ._errors import CLIError
from .jsonpath import Template, find, format_value

NONE = "<none>"


# --- formatting helpers ---------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: 45s, 5m30s, 45m, 3h20m, 30h, 3d4h, 45d, 3y45d, 10y."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if y < 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return NONE
    return human_duration(((now or utcnow()) - ts).total_seconds())


def fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def resource_ref(obj: Resource | type[Resource]) -> str:
    """``job.balsam.io`` (kubectl's TYPE.GROUP in ``-o name`` and apply's output)."""
    kind = obj if isinstance(obj, type) else type(obj)
    return f"{kind.SINGULAR}.{API_VERSION.split('/')[0]}"


def object_ref(obj: Resource) -> str:
    return f"{resource_ref(obj)}/{obj.name}"


def as_list(objs: Sequence[Resource]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [o.to_dict() for o in objs]}


def dump_yaml(data: Any) -> str:
    from ruamel.yaml import YAML  # only -o yaml pays for it (start-up of every other get)

    y = YAML(typ="rt")
    y.default_flow_style = False
    y.width = 4096
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


# --- table columns --------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], str]
    wide: bool = False  # shown only with -o wide
    # The widest value the column can hold (0: unbounded, such as names): a stream (get -w)
    # pads to at least this, so a later, longer value (a state) does not shift its row.
    width: int = 0
    empty: str = NONE  # what an empty value shows (-L columns: nothing, as in kubectl)


def _name(o: Resource) -> str:
    return o.name


def _age(o: Resource) -> str:
    return age(o.metadata.creation_timestamp)


def _job_state(o: Job) -> str:
    """The state, and ``,Suspended`` while ``spec.suspend`` holds the job (kubectl's
    ``Ready,SchedulingDisabled`` for a cordoned node); a finished job shows its state only."""
    state = o.status.state.value
    return f"{state},Suspended" if o.spec.suspend and o.status.state not in TERMINAL else state


def _job_nodes(o: Job) -> str:
    p = o.status.placement
    return ",".join(p.nodes) if p is not None and p.nodes else NONE


def _reason_condition(o: Job) -> Any:
    """The most telling problem among the job's conditions (``apis/_reasons.py``'s order)."""
    found = [c for c in o.status.conditions
             if c.status == "True" or (c.status == "False" and c.type in ("ControllerManager", "NodeAgents"))]
    rank = {t: i for i, t in enumerate(REASON_PRIORITY)}
    return min(found, key=lambda c: rank.get(c.type, len(rank)), default=None)


def _job_reason(o: Job) -> str:
    c = _reason_condition(o)
    return NONE if c is None else c.reason or c.type


def _job_message(o: Job) -> str:
    c = _reason_condition(o)
    if c is not None and c.message:
        return c.message  # the reason's own words (status.message is the last step's)
    return o.status.message or NONE


def _event_last_seen(o: Event) -> str:
    last = o.last_timestamp or o.first_timestamp or o.metadata.creation_timestamp
    text = age(last)
    if o.count > 1 and o.first_timestamp is not None:
        text += f" (x{o.count} over {age(o.first_timestamp)})"
    return text


def _event_object(o: Event) -> str:
    r = o.involved_object
    return f"{r.kind.lower()}/{r.name}"


def _node_occupancy(o: Node) -> str:
    return f"{o.status.occupancy:.2f}"


def _node_cpus(o: Node) -> str:
    return f"{len(o.status.busy_cpus)}/{o.spec.cpus}"


def _node_gpus(o: Node) -> str:
    return f"{len(o.status.busy_gpus)}/{o.spec.gpus}"


def _app_command(o: AppKind) -> str:
    if o.spec.command:
        cmd = " ".join(o.spec.command.split())
        return cmd if len(cmd) <= 60 else cmd[:57] + "..."
    py = o.spec.python
    return f"python:{py.module or '__main__'}.{py.class_name}" if py is not None else NONE


COLUMNS: dict[str, list[Column]] = {
    "Job": [
        Column("NAME", _name),
        Column("APP", lambda o: o.spec.app),
        Column("STATE", _job_state, width=len("AWAITING_PARENTS,Suspended") + 3),
        Column("WORKDIR", lambda o: o.spec.workdir),
        Column("AGE", _age, width=10),
        Column("NODES", _job_nodes, wide=True),
        Column("PRIORITY", lambda o: str(o.spec.priority), wide=True, width=10),
        Column("TAGS", lambda o: labels_text(o.metadata.labels), wide=True),
        Column("REASON", _job_reason, wide=True, width=len("NoControllerManager") + 3),
        Column("MESSAGE", _job_message, wide=True),
    ],
    "App": [
        Column("NAME", _name),
        Column("COMMAND", _app_command),
        Column("PARAMETERS", lambda o: ",".join(o.spec.parameters) or NONE),
        Column("AGE", _age),
        Column("TRANSFERS", lambda o: ",".join(o.spec.transfers) or NONE, wide=True),
        Column("SITE", lambda o: o.spec.site or NONE, wide=True),
    ],
    "Site": [
        Column("NAME", _name),
        Column("PATH", lambda o: o.spec.path),
        Column("SCHEDULER", lambda o: o.spec.scheduler),
        Column("LAUNCHER", lambda o: o.spec.launcher),
        Column("AGE", _age),
        Column("ELASTIC", lambda o: "yes" if o.spec.elastic_queue and o.spec.elastic_queue.enabled else "no",
               wide=True),
    ],
    "BatchJob": [
        Column("NAME", _name),
        Column("NODES", lambda o: str(o.spec.num_nodes)),
        Column("WALLTIME", lambda o: f"{fmt_num(o.spec.wall_time_min)}m"),
        Column("STATE", lambda o: o.status.state, width=len("pending_submission") + 3),
        Column("SCHEDULER-ID", lambda o: o.status.scheduler_id or NONE),
        Column("AGE", _age),
        Column("QUEUE", lambda o: o.spec.queue or NONE, wide=True),
        Column("PROJECT", lambda o: o.spec.project or NONE, wide=True),
        Column("MODE", lambda o: o.spec.job_mode, wide=True),
        Column("SELECTOR", lambda o: labels_text(o.spec.selector), wide=True),
        Column("MESSAGE", lambda o: o.status.message or NONE, wide=True),
    ],
    "Node": [
        Column("NAME", _name),
        Column("CPUS", _node_cpus),
        Column("GPUS", _node_gpus),
        Column("OCCUPANCY", _node_occupancy),
        Column("BATCHJOB", lambda o: o.spec.batch_job or NONE),
        Column("AGE", _age),
        Column("HOSTNAME", lambda o: o.spec.hostname, wide=True),
        Column("RUNNING", lambda o: str(len(o.status.running_jobs)), wide=True),
        Column("HEARTBEAT", lambda o: age(o.status.heartbeat), wide=True),
    ],
    "TransferTask": [
        Column("NAME", _name),
        Column("PROVIDER", lambda o: o.spec.provider),
        Column("DIRECTION", lambda o: o.spec.direction),
        Column("ITEMS", lambda o: str(len(o.spec.items))),
        Column("STATE", lambda o: o.status.state, width=len("Succeeded") + 3),
        Column("AGE", _age),
        Column("LOCATION", lambda o: o.spec.location, wide=True),
        Column("TASK-ID", lambda o: o.status.provider_task_id or NONE, wide=True),
        Column("MESSAGE", lambda o: o.status.message or NONE, wide=True),
    ],
    "Event": [
        Column("LAST SEEN", _event_last_seen, width=len("59m (x999 over 59m)") + 3),
        Column("TYPE", lambda o: o.type, width=len("Warning") + 3),
        Column("REASON", lambda o: o.reason, width=len("NoControllerManager") + 3),
        Column("OBJECT", _event_object),
        Column("MESSAGE", lambda o: " ".join(o.message.split()) or NONE),
        Column("SOURCE", lambda o: o.reporting_controller or NONE, wide=True),
        Column("FIRST SEEN", lambda o: age(o.first_timestamp), wide=True),
        Column("COUNT", lambda o: str(o.count), wide=True),
        Column("NAME", _name, wide=True),
    ],
}
DEFAULT_COLUMNS = [Column("NAME", _name), Column("AGE", _age)]

# Fail at import, not at print time, if a kind is renamed.
assert {Job.KIND, AppKind.KIND, Site.KIND, BatchJob.KIND, Node.KIND, TransferTask.KIND, Event.KIND} <= set(COLUMNS)


def format_table(header: Sequence[str] | None, rows: Sequence[Sequence[str]],
                 widths: list[int] | None = None) -> tuple[str, list[int]]:
    """kubectl's tabwriter look: cells padded to max(10, longest + 3), the last one not padded."""
    ncols = len(header) if header is not None else (len(rows[0]) if rows else 0)
    if widths is None:
        widths = [0] * ncols
        for r in ([header] if header is not None else []) + list(rows):
            for i, cell in enumerate(r):
                widths[i] = max(widths[i], len(cell))
        widths = [max(10, w + 3) for w in widths]
    lines = []
    for r in ([header] if header is not None else []) + list(rows):
        cells = [c.ljust(widths[i]) if i < ncols - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + ("\n" if lines else ""), widths


# --- printers -------------------------------------------------------------------------


@dataclass
class PrintOptions:
    with_namespace: bool = False  # -A: a NAMESPACE column / namespace in names
    no_headers: bool = False
    label_columns: tuple[str, ...] = ()  # -L key1,key2: a column per label key (tables only)
    show_labels: bool = False  # --show-labels: a LABELS column last (tables only)


def label_header(key: str) -> str:
    """kubectl's ``-L`` header: the key's last path segment, upper-cased (``app.kubernetes.io/name`` → NAME)."""
    return key.rsplit("/", 1)[-1].upper()


def _label_value(key: str) -> Callable[[Any], str]:
    def value(o: Any) -> str:
        return str(o.metadata.labels.get(key, ""))

    return value


def label_columns(options: PrintOptions) -> list[Column]:
    """The columns ``-L`` and ``--show-labels`` add after a kind's own (kubectl's order)."""
    cols = [Column(label_header(k), _label_value(k), empty="") for k in options.label_columns]
    if options.show_labels:
        cols.append(Column("LABELS", lambda o: labels_text(o.metadata.labels)))
    return cols


class Printer:
    """Base of every printer. ``arg`` is what followed ``=`` in ``-o name=arg``."""

    takes_arg: ClassVar[bool] = False

    def __init__(self, kind: type[Resource], arg: str | None = None, options: PrintOptions | None = None) -> None:
        self.kind = kind
        self.arg = arg
        self.options = options or PrintOptions()

    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        """A whole result; ``single`` when the user named exactly one object."""
        raise NotImplementedError

    def render_event(self, obj: Resource, first: bool) -> str:
        """One object of a stream (``get -w``): by default as a single object."""
        return self.render([obj], single=True)

    def render_watch_start(self, objs: Sequence[Resource]) -> str:
        """The list a stream starts with (``get -w``): by default one event per object, as
        kubectl prints ``-o json|yaml|name`` in watch mode (objects, not a List)."""
        return "".join(self.render_event(o, first=i == 0) for i, o in enumerate(objs))


PRINTERS: dict[str, type[Printer]] = {}


def printer(name: str) -> Callable[[type[Printer]], type[Printer]]:
    def deco(cls: type[Printer]) -> type[Printer]:
        PRINTERS[name] = cls
        return cls

    return deco


@printer("table")
class TablePrinter(Printer):
    wide = False

    def __init__(self, kind: type[Resource], arg: str | None = None, options: PrintOptions | None = None) -> None:
        super().__init__(kind, arg, options)
        cols = COLUMNS.get(kind.KIND, DEFAULT_COLUMNS)
        self.columns = [c for c in cols if self.wide or not c.wide] + label_columns(self.options)
        self._widths: list[int] | None = None

    def header(self) -> list[str]:
        h = [c.header for c in self.columns]
        return ["NAMESPACE", *h] if self.options.with_namespace else h

    def row(self, obj: Resource) -> list[str]:
        cells = []
        for c in self.columns:
            try:
                v = c.value(obj)
            except (AttributeError, TypeError):
                v = NONE
            cells.append(v if v != "" else c.empty)
        return [obj.namespace, *cells] if self.options.with_namespace else cells

    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        header = None if self.options.no_headers else self.header()
        text, self._widths = format_table(header, [self.row(o) for o in objs])
        return text

    def fixed_widths(self) -> list[int]:
        """The least width of each column in a stream: the kind's declared widths."""
        w = [max(10, c.width) for c in self.columns]
        return [10, *w] if self.options.with_namespace else w

    def _stream_widths(self, header: list[str] | None, rows: list[list[str]]) -> list[int]:
        _, computed = format_table(header, rows)
        return [max(a, b) for a, b in zip(computed, self.fixed_widths(), strict=True)]

    def render_watch_start(self, objs: Sequence[Resource]) -> str:
        # One aligned table, at least as wide as the kind's declared widths: the streamed rows
        # reuse its widths, so a later, longer state does not shift them.
        header = None if self.options.no_headers else self.header()
        rows = [self.row(o) for o in objs]
        self._widths = self._stream_widths(header, rows)
        return format_table(header, rows, self._widths)[0]

    def render_event(self, obj: Resource, first: bool) -> str:
        header = None if (self.options.no_headers or not first) else self.header()
        rows = [self.row(obj)]
        if first or self._widths is None:
            self._widths = self._stream_widths(header, rows)
        return format_table(header, rows, self._widths)[0]


@printer("wide")
class WidePrinter(TablePrinter):
    wide = True


@printer("yaml")
class YamlPrinter(Printer):
    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        if single and len(objs) == 1:
            return dump_yaml(objs[0].to_dict())
        return dump_yaml(as_list(objs))

    def render_event(self, obj: Resource, first: bool) -> str:
        return ("" if first else "---\n") + dump_yaml(obj.to_dict())


@printer("json")
class JsonPrinter(Printer):
    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        data = objs[0].to_dict() if single and len(objs) == 1 else as_list(objs)
        return json.dumps(data, indent=4) + "\n"


@printer("name")
class NamePrinter(Printer):
    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        return "".join(f"{object_ref(o)}\n" for o in objs)


@printer("jsonpath")
class JsonPathPrinter(Printer):
    takes_arg = True

    def __init__(self, kind: type[Resource], arg: str | None = None, options: PrintOptions | None = None) -> None:
        super().__init__(kind, arg, options)
        if not arg:
            raise CLIError("template format specified but no template given")
        self.template = Template(arg)

    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        data = objs[0].to_dict() if single and len(objs) == 1 else as_list(objs)
        return self.template.render(data)


@printer("custom-columns")
class CustomColumnsPrinter(Printer):
    takes_arg = True

    def __init__(self, kind: type[Resource], arg: str | None = None, options: PrintOptions | None = None) -> None:
        super().__init__(kind, arg, options)
        if not arg:
            raise CLIError("custom-columns format specified but no custom columns given")
        self.spec: list[tuple[str, str]] = []
        for part in arg.split(","):
            header, sep, path = part.partition(":")
            if not sep or not header or not path:
                raise CLIError(f'unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>')
            expr = path.strip()
            expr = expr[1:-1] if expr.startswith("{") and expr.endswith("}") else expr
            find({}, expr)  # syntax errors now
            self.spec.append((header.strip(), expr))
        self._widths: list[int] | None = None

    def _row(self, obj: Resource) -> list[str]:
        d = obj.to_dict()
        return [",".join(format_value(v) for v in find(d, p)) or NONE for _, p in self.spec]

    def render(self, objs: Sequence[Resource], single: bool = False) -> str:
        header = None if self.options.no_headers else [h for h, _ in self.spec]
        text, self._widths = format_table(header, [self._row(o) for o in objs])
        return text

    def render_watch_start(self, objs: Sequence[Resource]) -> str:
        return self.render(objs)

    def render_event(self, obj: Resource, first: bool) -> str:
        if first or self._widths is None:
            return self.render([obj])
        return format_table(None, [self._row(obj)], self._widths)[0]


def printer_for(output: str | None, kind: type[Resource], options: PrintOptions | None = None) -> Printer:
    """The printer ``-o OUTPUT`` names (``None``: the table)."""
    name, sep, arg = (output or "table").partition("=")
    cls = PRINTERS.get(name)
    if cls is None or (sep and not cls.takes_arg):
        allowed = ", ".join(sorted(n + ("=..." if c.takes_arg else "") for n, c in PRINTERS.items() if n != "table"))
        raise CLIError(f'unable to match a printer suitable for the output format "{output}", allowed formats '
                       f"are: {allowed}")
    return cls(kind, arg if sep else None, options)
