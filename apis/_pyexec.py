"""What a fork-server child does: run a Python app's ``run()``, or one lifecycle hook.

Both run in a fresh process (:mod:`apis._forkserver`) whose cwd is the job's workdir and whose
environment carries ``BALSAM_SITE_PATH`` (so ``site_config.data_path`` works) and
``BALSAM_STORE`` (so ``Job.objects`` reaches the site's store). Each writes a small JSON
handoff file (``spec["result_path"]``) that its parent reads when the process exits:

* ``run``: ``{"result": ...}`` or ``{"exception": "Type: msg", "exceptionData": b64, "traceback": tail}``
  (see :mod:`apis._pycodec`); exit code 0, or 1 when ``run()`` raised (the traceback is
  printed to ``job.out`` too).
* ``hook``: ``{"state", "data", "fields", "newJobs"}`` or ``{"error": "Type: msg\\n<traceback tail>",
  "transient": bool}`` (transient: the hook met a store outage, see ``is_store_outage``).
  Jobs the hook creates are captured (not written) and created by the hook reconciler in
  the same write as the hook's step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import store as st

from . import _client
from ._appdef import load_app_class
from ._errors import StoreUnavailable
from ._kinds import Job
from ._pycodec import RESULT_FILE, decode_params, encode_exception, encode_result

#: What a hook raises when the store was briefly away, not because the hook is wrong: the
#: outcome says ``transient`` and the hook reconciler runs the hook again (issue 12: nothing is
#: FAILED because the store was unreachable).
STORE_AWAY = (StoreUnavailable, st.Unavailable)


def is_store_outage(e: BaseException) -> bool:
    """``e``, or an exception it was raised from (``raise ... from``, or during handling), is a
    store outage."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, STORE_AWAY):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False

TRACEBACK_LINES = 15
TRACEBACK_CHARS = 2000


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"), default=str)
    os.replace(tmp, path)


def traceback_tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-TRACEBACK_LINES:]
    return "\n".join(lines)[-TRACEBACK_CHARS:]


def _extend_sys_path(spec: dict[str, Any]) -> None:
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    apps_dir = spec.get("apps_dir")
    if apps_dir and os.path.isdir(apps_dir):
        extra.append(apps_dir)
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)


def load_app(spec: dict[str, Any]) -> Any:
    """The App class of ``spec`` (imported by module path, else unpickled): once per warm worker."""

    _extend_sys_path(spec)
    return load_app_class(spec["app"])


def run_app(spec: dict[str, Any]) -> int:
    """``run()`` with the job's parameters, in a fresh process: its outcome goes to the
    handoff file ``spec["result_path"]``; see :func:`run_loaded`."""
    try:
        cls = load_app(spec)
    except Exception as e:  # noqa: BLE001 - a class that cannot be loaded is the job's error
        code, doc = 1, failed_outcome(e)
    else:
        code, _, doc = run_loaded(spec, cls)
    _write_json(spec["result_path"], doc)
    return code


def failed_outcome(e: BaseException) -> dict[str, Any]:
    """The outcome of a ``run()`` that raised ``e`` (while handling it: its traceback is printed
    to ``job.out`` too)."""
    tb = traceback.format_exc()
    sys.stderr.write(tb)
    text, pickled = encode_exception(e, tb)
    doc: dict[str, Any] = {"exception": text, "traceback": traceback_tail(tb)}
    if pickled is not None:
        doc["exceptionData"] = pickled
    return doc


def run_loaded(spec: dict[str, Any], cls: Any) -> tuple[int, Exception | None, dict[str, Any]]:
    """``cls(job).run(**parameters)`` in the job's cwd: the exit code (0, or 1 when ``run()``
    raised), the exception raised, and the outcome (``{"result": ...}`` or the exception's
    fields, see the module docstring). A warm worker sends the outcome on its pipe; a fresh
    process writes it to its handoff file."""
    large = RESULT_FILE  # relative: the job's cwd
    if spec.get("attempt", 2) > 1:  # an earlier attempt's (a first one has none to remove)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(large)
    try:
        params = decode_params(spec["parameters"])
        app = cls(spec["job"])
        value = app.run(**params)  # type: ignore[attr-defined]
        cwd = spec.get("cwd")
        where = os.path.join(cwd, large) if cwd and os.path.isabs(cwd) else os.path.abspath(large)
        encoded, data = encode_result(value, where)
        if data is not None:
            tmp = large + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, large)
    except Exception as e:  # noqa: BLE001 - the app's error is the job's result
        return 1, e, failed_outcome(e)
    return 0, None, {"result": encoded}


class _Capture:
    """Jobs a hook creates: named now (generateName resolved), created later by the reconciler."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}

    def __call__(self, objs: list[Any]) -> list[Any] | None:

        if not objs or not all(isinstance(o, Job) for o in objs):
            return None  # not jobs: written as usual
        out = []
        for o in objs:
            n = o.model_copy(deep=True)
            n.ensure_identity()
            self.jobs[n.name] = n
            out.append(n)
        return out


def run_hook(spec: dict[str, Any]) -> int:
    """One hook on ``self.job``; its outcome goes to the handoff file."""

    _extend_sys_path(spec)
    hook = spec["hook"]
    outcome: dict[str, Any]
    try:
        job = Job.model_validate_json(spec["job"])
        job.metadata.resource_version = spec.get("resource_version")
        before_state = job.status.state
        before_data = copy.deepcopy(job.spec.data)
        capture = _Capture()
        _client.set_create_interceptor(capture)
        cls = load_app_class(spec["app"])
        app = cls(job)
        getattr(app, hook)()
        pending = dict(job._pending)
        state = job.status.state.value if job.status.state != before_state else None
        data = job.spec.data if job.spec.data != before_data else None
        fields = {k: _plain(getattr(job, k)) for k in pending if k not in ("state", "data")}
        outcome = {"state": state, "data": data, "fields": fields,
                   "newJobs": [j.to_dict() for j in capture.jobs.values()]}
        json.dumps(outcome, default=str)  # fails here, not in the parent, if it cannot be sent
    except BaseException as e:  # noqa: BLE001 - a hook that raises fails its job, nothing else
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        head = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        outcome = {"error": f"{head}\n{traceback_tail(tb)}", "transient": is_store_outage(e)}
    _write_json(spec["result_path"], outcome)
    return 0


def _plain(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


TASKS: dict[str, Callable[[dict[str, Any]], int]] = {"run": run_app, "hook": run_hook}
