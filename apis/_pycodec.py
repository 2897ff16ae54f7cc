"""How Python values travel through the store: a Python app's arguments, results and exceptions.

Job parameters are strings (``spec.parameters``: ``{name: str}``), so a Python app's arguments
are encoded one by one:

* a value that JSON carries exactly (``None``, ``bool``, ``int``, ``float``, ``str`` and lists
  and string-keyed dicts of those) is stored as its JSON text: ``x=3`` → ``"3"``, ``s="hi"`` →
  ``'"hi"'`` — readable in ``balsamctl get job -o yaml``;
* anything else (a tuple, a numpy array, an object) is ``"cloudpickle:" + base64(cloudpickle)``.

Decoding inverts that; a value that is neither (a parameter written by hand in YAML, such as
``name: world``) is passed through as the string itself.

``run()``'s return value goes to ``status.result``: the JSON value itself when JSON carries it
exactly (``result: 10``), else ``{"$cloudpickle": base64}``. A result whose encoding is larger
than :data:`INLINE_CAP` bytes is written to ``job.result.pkl`` in the job's workdir and
``status.result`` is ``{"$file": "/abs/path/job.result.pkl", "bytes": N}`` (the reader needs the
workdir's filesystem, as with every other output of the job); a result larger than
:data:`FILE_CAP` bytes is refused (:class:`ResultTooLarge`, raised in the app's process, so the
job ends in RUN_ERROR). An exception raised by ``run()`` is kept as text in
``status.exception`` (``"ValueError: bad x"``) and pickled in ``status.exceptionData`` (when it
pickles within :data:`INLINE_CAP`), so that ``job.result()`` re-raises the same exception.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from typing import Any

import cloudpickle

#: Largest encoded result or exception kept inside the job (bytes of base64/JSON text).
INLINE_CAP = 16 * 1024
#: Largest pickled result written to the workdir (bytes); larger ones fail the run.
FILE_CAP = 1024**3
#: File a large result is written to, in the job's workdir.
RESULT_FILE = "job.result.pkl"

PICKLE_PREFIX = "cloudpickle:"
_TAGS = ("$cloudpickle", "$file")


class ResultTooLarge(Exception):
    """``run()`` returned a value whose pickle exceeds :data:`FILE_CAP`."""


def _json_exact(v: Any, depth: int = 0) -> bool:
    """True when ``json.loads(json.dumps(v)) == v`` with the same types all the way down."""
    if depth > 50:
        return False
    t = type(v)
    if v is None or t is bool or t is int or t is str:
        return True
    if t is float:
        return math.isfinite(v)
    if t is list:
        return all(_json_exact(x, depth + 1) for x in v)
    if t is dict:
        return all(type(k) is str and _json_exact(x, depth + 1) for k, x in v.items())
    return False


def b64pickle(v: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(v)).decode("ascii")


def b64unpickle(s: str) -> Any:
    return cloudpickle.loads(base64.b64decode(s))


# --- parameters --------------------------------------------------------------------------


#: ``json.dumps(v, separators=(",", ":"))`` without making an encoder per call (half its cost).
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_param(v: Any) -> str:
    t = type(v)
    if t is int:  # the usual argument: its JSON text is its repr
        return int.__repr__(v)
    if t is str or _json_exact(v):
        return _compact_json(v)
    return PICKLE_PREFIX + b64pickle(v)


def decode_param(s: str) -> Any:
    if s.isdigit() and s.isascii() and len(s) < 19 and (s[0] != "0" or len(s) == 1):  # an int's JSON
        return int(s)
    if s.startswith(PICKLE_PREFIX):
        return b64unpickle(s[len(PICKLE_PREFIX):])
    try:
        return json.loads(s)
    except ValueError:
        return s  # written by hand (YAML, the CLI): the string itself


def encode_params(params: dict[str, Any]) -> dict[str, str]:
    return {str(k): encode_param(v) for k, v in params.items()}


def decode_params(params: dict[str, str]) -> dict[str, Any]:
    return {k: decode_param(v) for k, v in params.items()}


# --- results -----------------------------------------------------------------------------


def _is_tagged(v: Any) -> bool:
    return type(v) is dict and len(v) >= 1 and next(iter(v)) in _TAGS


def encode_result(v: Any, file_path: str) -> tuple[Any, bytes | None]:
    """(what goes to ``status.result``, bytes to write to ``file_path`` or None)."""
    t = type(v)
    if v is None or t is bool or (t is int and v.bit_length() <= 64):  # the usual result: inline as it is
        return v, None
    if _json_exact(v) and not _is_tagged(v):
        text = _compact_json(v)
        if len(text) <= INLINE_CAP:
            return v, None
    data = cloudpickle.dumps(v)
    if len(data) * 4 // 3 + 4 <= INLINE_CAP:
        return {"$cloudpickle": base64.b64encode(data).decode("ascii")}, None
    if len(data) > FILE_CAP:
        raise ResultTooLarge(f"run() returned {len(data):,} bytes pickled; the limit is {FILE_CAP:,} "
                             f"(write large outputs to files in the workdir instead)")
    return {"$file": file_path, "bytes": len(data)}, data


def decode_result(v: Any) -> Any:
    """The Python value of ``status.result`` (reads the result file for ``$file``)."""
    if type(v) is dict and "$cloudpickle" in v:
        return b64unpickle(v["$cloudpickle"])
    if type(v) is dict and "$file" in v:
        with open(v["$file"], "rb") as f:
            return cloudpickle.load(f)
    return v


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a job's process: the ``__cause__`` of the
    exception ``result()`` re-raises, so that both tracebacks are printed (as
    ``concurrent.futures.ProcessPoolExecutor`` does)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _with_traceback(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class _ExceptionWithTraceback:
    """Pickles as ``exc`` whose ``__cause__`` is its remote traceback (a cause does not
    survive pickling by itself)."""

    def __init__(self, exc: BaseException, tb: str) -> None:
        self.exc, self.tb = exc, tb

    def __reduce__(self) -> tuple[Any, ...]:
        return _with_traceback, (self.exc, self.tb)


#: Longest traceback text carried with an exception (its last characters).
TRACEBACK_CAP = 8 * 1024


def encode_exception(e: BaseException, tb: str | None = None) -> tuple[str, str | None]:
    """(``"Type: message"``, base64 pickle of the exception — with ``tb``, the traceback text
    of where it was raised, as its ``__cause__`` — or None if it does not pickle or is larger
    than :data:`INLINE_CAP`)."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    data: str | None = None
    if tb:
        with contextlib.suppress(Exception):
            data = b64pickle(_ExceptionWithTraceback(e, tb[-TRACEBACK_CAP:]))
    if data is None or len(data) > INLINE_CAP:
        try:
            data = b64pickle(e)
        except Exception:  # noqa: BLE001 - an exception holding a socket, a lock...
            return text, None
    return text, (data if len(data) <= INLINE_CAP else None)
