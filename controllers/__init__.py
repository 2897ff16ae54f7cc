"""Reconcilers and the framework that runs them (controller-runtime's contract in Python)."""

from __future__ import annotations

from ._controller import Context, Controller, Reconciler, Request, Result, TerminalError, Writes, write_batch
from ._informer import Informer
from ._jobcache import JobInformer
from ._leader import LeaderElector
from ._manager import ControllerManager
from ._queue import WorkQueue
from .hooks import HookOutcome, HookRunner, NoHooks

__all__ = [
    "Context",
    "Controller",
    "ControllerManager",
    "HookOutcome",
    "HookRunner",
    "Informer",
    "JobInformer",
    "LeaderElector",
    "NoHooks",
    "Reconciler",
    "Request",
    "Result",
    "TerminalError",
    "WorkQueue",
    "Writes",
    "write_batch",
]
