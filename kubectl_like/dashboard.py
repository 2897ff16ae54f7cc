"""``balsamctl dashboard``'s server: one namespace's campaign, aggregated in memory from ONE
store watch and pushed to every open page as server-sent events.

* :class:`CampaignState` — listed once (jobs as raw JSON through :func:`apis.analytics.job_facts`,
  nodes, batch jobs), then kept current by a watch on ``/registry/`` in a thread. It holds a
  few numbers per job (never the jobs' documents), so 10^5 jobs cost tens of MB, and a page
  receives only aggregates: state counts, per-minute series, the nodes, the allocations and
  the most recent failing jobs.
* :func:`make_app` — a Starlette app: ``/`` (the page, with the current summary inline so
  the first paint needs no second request), ``/events`` (SSE: a ``summary`` event after each
  change, at most 5 per second), ``/api/summary``, ``/jobs/NAME`` and ``/api/jobs/NAME`` (one
  store read), ``/healthz``. Read-only: no route writes.
* Bound to 127.0.0.1 unless told otherwise; bound elsewhere (or with ``--require-token``)
  every route but ``/healthz`` needs the token: ``?token=`` (then kept in an HttpOnly cookie),
  the cookie, or ``Authorization: Bearer``. A wrong or missing one gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import store as st
from apis import Job, Registry
from apis._registry import REGISTRY, object_key
from apis.analytics import FAILING_STATES, JobFacts, add_area, iter_jobs, job_facts, load_raw, minute_of

from ._dashboard_page import JOB_PAGE, MAIN_PAGE

WINDOW_MIN = 240  # minutes of throughput/utilization a page shows (the most recent ones)
FAILING_SHOWN = 50
PUSH_INTERVAL_S = 0.2  # a burst of changes becomes one push per page per this interval
TOKEN_COOKIE = "balsam_dashboard_token"
TICK_S = 15.0  # a fresh summary this often when nothing changes


class CampaignState:
    """The aggregates a page shows, kept current from one watch (see the module doc)."""

    def __init__(self, registry: Registry, namespace: str) -> None:
        self.registry = registry
        self.namespace = namespace
        self.lock = threading.Lock()
        self.version = 0
        self.revision = 0
        self.jobs: dict[str, JobFacts] = {}
        self.counts: Counter[str] = Counter()
        self.finished: Counter[int] = Counter()  # minute -> jobs finished in it
        self.area: defaultdict[int, float] = defaultdict(float)  # minute -> node-seconds of ended runs
        self.running: dict[str, tuple[float, float]] = {}  # job -> (run start, nodes) of open runs
        self.failing: dict[str, JobFacts] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.batchjobs: dict[str, dict[str, Any]] = {}
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._summary: tuple[int, bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # --- loading and applying changes -----------------------------------------------------

    def load(self) -> None:
        """List everything once (raw JSON pages), remembering the revision to watch from."""
        with self.lock:
            self.jobs.clear()
            self.counts.clear()
            self.finished.clear()
            self.area.clear()
            self.running.clear()
            self.failing.clear()
            self.revision = self.registry.store.current_revision()
            # 10^5 decoded documents, no garbage among them: balsamctl's main sets the
            # collector's thresholds for that (store/process.py), not this refresh
            for d in iter_jobs(self.registry, self.namespace):
                self._add(job_facts(d))
            self.nodes = {d["metadata"]["name"]: d for d in load_raw(self.registry, "nodes", self.namespace)}
            self.batchjobs = {d["metadata"]["name"]: d for d in load_raw(self.registry, "batchjobs", self.namespace)}
            self.version += 1

    def _add(self, f: JobFacts, sign: int = 1) -> None:
        self.counts[f.state] += sign
        if f.finished is not None:
            self.finished[minute_of(f.finished)] += sign
        for start, end in f.runs:
            if end is None:
                if sign > 0:
                    self.running[f.name] = (start, f.nodes)
                else:
                    self.running.pop(f.name, None)
            else:
                add_area(self.area, start, end, sign * f.nodes)
        if f.state in FAILING_STATES:
            if sign > 0:
                self.failing[f.name] = f
            else:
                self.failing.pop(f.name, None)
        if sign > 0:
            self.jobs[f.name] = f
        else:
            self.jobs.pop(f.name, None)

    def apply(self, events: list[st.Event]) -> bool:
        """Fold watch events into the aggregates; True if any concerned this namespace."""
        changed = False
        with self.lock:
            for ev in events:
                parts = ev.kv.key[len(REGISTRY):].split("/", 2)
                if len(parts) != 3 or parts[1] != self.namespace:
                    continue
                plural, _, name = parts
                doc = orjson.loads(ev.kv.value) if ev.type == "PUT" else None
                if plural == "jobs":
                    old = self.jobs.get(name)
                    if old is not None:
                        self._add(old, -1)
                    if doc is not None:
                        self._add(job_facts(doc))
                elif plural in ("nodes", "batchjobs"):
                    table = self.nodes if plural == "nodes" else self.batchjobs
                    if doc is None:
                        table.pop(name, None)
                    else:
                        table[name] = doc
                else:
                    continue
                changed = True
                self.revision = max(self.revision, ev.revision)
            if changed:
                self.version += 1
        return changed

    # --- the watch thread -----------------------------------------------------------------

    def start(self) -> None:
        self.load()
        self._thread = threading.Thread(target=self._watch_loop, name="dashboard-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with self.registry.store.watch(REGISTRY, start_revision=self.revision + 1) as w:
                    self.error = None
                    backoff = 0.5
                    quiet_since = time.monotonic()
                    while not self._stop.is_set():
                        evs = w.poll(timeout=0.5)
                        if evs and self.apply(evs):
                            self._notify()
                            quiet_since = time.monotonic()
                        elif time.monotonic() - quiet_since > TICK_S:
                            # Nothing changed, but time moved on: the current minute, running
                            # jobs' busy time and heartbeat ages are worth a fresh summary.
                            with self.lock:
                                self.version += 1
                            self._notify()
                            quiet_since = time.monotonic()
            except st.Compacted:
                self.load()  # the history we would resume from is gone: list again
                self._notify()
            except (st.Unavailable, st.WatchClosed, OSError) as e:
                self.error = f"store unreachable: {e}"
                self._notify()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def listen(self, loop: asyncio.AbstractEventLoop, ev: asyncio.Event) -> Callable[[], None]:
        pair = (loop, ev)
        with self.lock:
            self._listeners.add(pair)
        return lambda: self._listeners.discard(pair)

    def _notify(self) -> None:
        with self.lock:
            listeners = list(self._listeners)
        for loop, ev in listeners:
            with contextlib.suppress(RuntimeError):  # that page's loop has closed
                loop.call_soon_threadsafe(ev.set)

    # --- what a page receives -------------------------------------------------------------

    def summary_json(self) -> bytes:
        return self.summary()[1]

    def summary(self) -> tuple[int, bytes]:
        """(version, the page's JSON), made once per version whatever the number of pages."""
        with self.lock:
            if self._summary is None or self._summary[0] != self.version:
                self._summary = (self.version, orjson.dumps(self._summary_locked()))
            return self._summary

    def _summary_locked(self) -> dict[str, Any]:
        now = time.time()
        now_m = minute_of(now)
        mins = set(self.finished) | set(self.area) | {minute_of(s) for s, _ in self.running.values()}
        lo = max(min(mins, default=now_m), now_m - WINDOW_MIN + 1)
        area = defaultdict(float, {m: v for m, v in self.area.items() if m >= lo})
        busy_now = 0.0
        for start, nodes in self.running.values():
            add_area(area, max(start, lo * 60.0), now, nodes)
            busy_now += nodes
        span = range(lo, now_m + 1)
        failing = sorted(self.failing.values(), key=lambda f: -f.last_update)[:FAILING_SHOWN]
        return {
            "namespace": self.namespace,
            "version": self.version,
            "revision": self.revision,
            "generated": now,
            "error": self.error,
            "total": len(self.jobs),
            "counts": {k: v for k, v in self.counts.items() if v},
            "series": {
                "start": lo * 60,
                "finished": [self.finished.get(m, 0) for m in span],
                # the current minute only so far: its average over the seconds gone by
                "busy": [round(area.get(m, 0.0) / (60.0 if m < now_m else max(1.0, now - m * 60)), 3)
                         for m in span],
            },
            "busyNow": round(busy_now, 3),
            "nodes": [_node_row(d, now) for _, d in sorted(self.nodes.items())],
            "batchjobs": [_batchjob_row(d) for _, d in sorted(self.batchjobs.items())],
            "failingTotal": len(self.failing),
            "failing": [{"name": f.name, "app": f.app, "state": f.state, "returnCode": f.return_code,
                         "reason": f.reason, "outputTail": f.output_tail, "lastUpdate": f.last_update}
                        for f in failing],
        }


def _node_row(d: dict[str, Any], now: float) -> dict[str, Any]:
    spec, status = d.get("spec", {}), d.get("status") or {}
    hb = status.get("heartbeat")
    return {
        "name": d["metadata"]["name"], "batchJob": spec.get("batchJob"),
        "cpus": spec.get("cpus", 1), "busyCpus": len(status.get("busyCpus") or []),
        "gpus": spec.get("gpus", 0), "busyGpus": len(status.get("busyGpus") or []),
        "occupancy": float(status.get("occupancy", 0.0)), "jobs": len(status.get("runningJobs") or []),
        "heartbeatAge": round(now - datetime.fromisoformat(hb).timestamp(), 1) if hb else None,
    }


def _batchjob_row(d: dict[str, Any]) -> dict[str, Any]:
    spec, status = d.get("spec", {}), d.get("status") or {}
    return {
        "name": d["metadata"]["name"], "state": status.get("state", "pending_submission"),
        "nodes": spec.get("numNodes", 1), "wallTimeMin": spec.get("wallTimeMin", 10),
        "queue": spec.get("queue"), "project": spec.get("project"),
        "schedulerId": status.get("schedulerId"), "schedulerState": status.get("schedulerState"),
        "startTime": status.get("startTime"), "endTime": status.get("endTime"),
        "message": status.get("message", ""),
    }


# --- the web app -------------------------------------------------------------------------


def _inline_json(data: bytes) -> str:
    """JSON safe inside a <script> element (no '</script>' or '<!--' can close it early)."""
    return data.decode().replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _pre(value: Any) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=2, default=str))}</pre>"


def render_job_page(doc: dict[str, Any], namespace: str) -> str:
    md, spec, status = doc.get("metadata", {}), doc.get("spec", {}), doc.get("status") or {}
    conds = status.get("conditions") or []
    # Conditions shown as they are stored: every key any of them has becomes a column.
    keys: list[str] = []
    for c in conds:
        keys += [k for k in c if k not in keys]
    cond_rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c.get(k, '')))}</td>" for k in keys) + "</tr>"
                        for c in conds)
    cond_html = (f"<table id='conditions'><tr>{''.join(f'<th>{html.escape(k)}</th>' for k in keys)}</tr>"
                 f"{cond_rows}</table>") if conds else "<p id='conditions'>none</p>"
    hist_rows = "".join(
        f"<tr><td>{html.escape(str(e.get('time', '')))}</td><td>{html.escape(str(e.get('from') or ''))}</td>"
        f"<td>{html.escape(str(e.get('to', '')))}</td><td>{html.escape(str(e.get('message', '')))}</td></tr>"
        for e in status.get("history") or [])
    brief = {k: status.get(k) for k in ("state", "returnCode", "attempts", "message", "exception", "startTime",
                                        "endTime", "lastUpdate") if status.get(k) is not None}
    rest = {k: v for k, v in status.items() if k not in ("history", "conditions", "outputTail")}
    return JOB_PAGE.substitute(
        name=html.escape(md.get("name", "")),
        namespace=html.escape(md.get("namespace") or namespace),  # "default" is left out of stored JSON
        state=html.escape(str(status.get("state", "CREATED"))),
        brief=_pre(brief),
        metadata=_pre(md),
        spec=_pre(spec),
        status=_pre(rest),
        conditions=cond_html,
        history=hist_rows,
        tail=html.escape(status.get("outputTail") or ""),
    )


def make_app(state: CampaignState, token: str | None, store_label: str) -> Starlette:
    async def page(request: Request) -> Response:
        body = MAIN_PAGE.replace("__NAMESPACE__", html.escape(state.namespace)).replace(
            "__STORE__", html.escape(store_label)).replace("__INITIAL__", _inline_json(state.summary_json()))
        return HTMLResponse(body)

    async def summary(request: Request) -> Response:
        return Response(state.summary_json(), media_type="application/json")

    async def events(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        forget = state.listen(loop, changed)

        async def stream() -> AsyncIterator[dict[str, str]]:
            sent = -1
            try:
                while True:
                    changed.clear()
                    if state.version != sent:
                        sent, data = state.summary()
                        yield {"event": "summary", "data": data.decode()}
                        await asyncio.sleep(PUSH_INTERVAL_S)
                        continue
                    await changed.wait()
            finally:
                forget()

        return EventSourceResponse(stream(), ping=15)

    def job_doc(name: str) -> dict[str, Any] | None:
        kv = state.registry.store.get(object_key(Job, state.namespace, name))
        return None if kv is None else orjson.loads(kv.value)

    async def job_page(request: Request) -> Response:
        doc = await asyncio.to_thread(job_doc, request.path_params["name"])
        if doc is None:
            return PlainTextResponse(f'jobs.balsam.io "{request.path_params["name"]}" not found', status_code=404)
        return HTMLResponse(render_job_page(doc, state.namespace))

    async def job_api(request: Request) -> Response:
        doc = await asyncio.to_thread(job_doc, request.path_params["name"])
        if doc is None:
            return JSONResponse({"error": "NotFound"}, status_code=404)
        return JSONResponse(doc)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/", page), Route("/events", events), Route("/api/summary", summary),
        Route("/jobs/{name}", job_page), Route("/api/jobs/{name}", job_api), Route("/healthz", healthz),
    ])
    if token is not None:
        app.add_middleware(_TokenMiddleware, token=token)  # type: ignore[arg-type]
    return app


class _TokenMiddleware:
    """Every route but /healthz needs the token (query, cookie or bearer); 401 otherwise."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        from_query = given is not None
        if given is None:
            given = request.cookies.get(TOKEN_COOKIE)
        if given is None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else None
        if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
            resp = PlainTextResponse("401 Unauthorized: this dashboard needs the token printed by "
                                     "'balsamctl dashboard' (?token=...)\n", status_code=401)
            await resp(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def utc_text(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
