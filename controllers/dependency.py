"""DependencyReconciler: CREATED → AWAITING_PARENTS | READY; AWAITING_PARENTS → READY the
moment the last parent is JOB_FINISHED (found through the children-by-parent index, not a
scan). A FAILED parent keeps the child waiting with a ``ParentFailed`` condition naming it
(``onParentFailure: Wait``, Balsam's behaviour) or fails it, and its children in turn
(``Fail``). Then no-op steps collapse into the same write (READY → STAGED_IN → PREPROCESSED).

A waiting job carries ``Waiting``/``WaitingForParents`` (its message stays the same while it
waits, so no write per finished parent; ``describe`` adds the parents' states when it reads).
An edit of ``spec.parents`` that closes a cycle (a create cannot: ``apis/_dag.py`` refuses it)
FAILs every waiting job of the cycle with ``Failed``/``DependencyCycle`` naming the cycle —
looked for only when the spec changed since the job was last observed, so it costs nothing
on the hot path. ``status.observedGeneration`` records the spec generation acted on."""

from __future__ import annotations

from collections.abc import Callable

from apis import App, Job, JobState, advance, remove_condition, set_condition, transition, utcnow
from apis._dag import cycle_text, find_cycle

from ._controller import Context, Request, Result
from ._informer import Informer
from ._jobcache import job_state
from ._steps import collapse_from_ready
from .hooks import HookRunner

WAITING = (JobState.CREATED, JobState.AWAITING_PARENTS)


class DependencyReconciler:
    name = "dependency"

    def __init__(self, hooks: HookRunner) -> None:
        self.hooks = hooks
        # Waiting jobs whose ancestry is known to hold no cycle through them: a later walk
        # stops there, so walking every new job of a long chain costs O(chain), not O(chain²).
        # Valid until parent links change: an edit of spec.parents, or a job made under a name
        # that waiting jobs name as a missing parent (then it is forgotten as a whole).
        self._acyclic: set[str] = set()  # single set operations: atomic under the GIL
        # Jobs found in a cycle, still to be failed (each in its own reconcile: the next one of
        # the cycle is a child of the one just failed, so that step brings it here).
        self._in_cycle: dict[str, str] = {}

    def register(self, informers: dict[str, Informer], enqueue: Callable[[Request], None]) -> None:
        jobs: Informer[Job] = informers["Job"]

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            relinked = (old is not None and new is not None and old.spec.parents != new.spec.parents) or \
                (old is None and new is not None and jobs.by_index("children", new.name))
            if relinked:
                self._acyclic.clear()
            elif new is None or new.status.state not in WAITING:
                self._acyclic.discard((new or old).name)  # type: ignore[union-attr]
            if new is not None and new.status.state in WAITING:
                enqueue(Request(new.name, new.namespace))
            # A parent reached an end (or vanished): look at its children.
            cur = new or old
            if cur is None:
                return
            ended = new is None or new.status.state in (JobState.JOB_FINISHED, JobState.FAILED)
            changed = old is None or new is None or old.status.state != new.status.state
            if ended and changed:
                for child in jobs.by_index("children", cur.name):
                    if child.status.state in WAITING:
                        enqueue(Request(child.name, child.namespace))

        jobs.add_handler(on_job)  # type: ignore[arg-type]

    def reconcile(self, req: Request, ctx: Context) -> Result | None:
        jobs: Informer[Job] = ctx.caches["Job"]
        job = jobs.get(req.name)
        if job is None or job.status.state not in WAITING:
            return None
        now = utcnow()
        msg = self._in_cycle.pop(job.name, None)
        if msg is None and job.spec.parents and job.status.observed_generation != job.metadata.generation:
            cycle = self._cycle(jobs, job)
            if cycle is not None:
                msg = (f"its parents form a dependency cycle: {cycle_text(cycle)}; no job of it can ever start "
                       "(edit spec.parents and submit the jobs again)")
                for other in cycle:
                    if other != job.name:
                        self._in_cycle[other] = msg
        if msg is not None:
            new = job.status_copy()
            new.status.observed_generation = job.metadata.generation
            remove_condition(new.status.conditions, "Waiting")
            set_condition(new.status.conditions, "Failed", "True", "DependencyCycle", msg, now)
            transition(new, JobState.FAILED, msg, now=now)
            ctx.update(job, new)
            return None
        new = job.status_copy()
        new.status.observed_generation = job.metadata.generation
        # A finished parent may have left the cache (controllers/_jobcache.py): its state still answers.
        parents = {p: job_state(jobs, p) for p in job.spec.parents}
        missing = sorted(p for p, s in parents.items() if s is None)
        failed = sorted(p for p, s in parents.items() if s is JobState.FAILED)
        pending = [p for p, s in parents.items() if s is not None and s is not JobState.JOB_FINISHED]

        if failed and job.spec.on_parent_failure == "Fail":
            msg = f"parent job {failed[0]} failed (onParentFailure: Fail)"
            remove_condition(new.status.conditions, "Waiting")
            set_condition(new.status.conditions, "Failed", "True", "ParentFailed", msg, now)
            transition(new, JobState.FAILED, msg, now=now)
        elif not pending and not missing:
            if new.status.state is JobState.CREATED and not job.spec.parents:
                advance(new, [JobState.READY], "no parents", now)
            else:
                if new.status.state is JobState.CREATED:
                    advance(new, [JobState.AWAITING_PARENTS], "waiting for parents", now)
                advance(new, [JobState.READY], "all parents finished", now)
            remove_condition(new.status.conditions, "ParentFailed")
            remove_condition(new.status.conditions, "ParentMissing")
            remove_condition(new.status.conditions, "Waiting")
            apps: Informer[App] = ctx.caches["App"]
            collapse_from_ready(new, apps.get(job.spec.app), self.hooks, now)
        else:
            if new.status.state is JobState.CREATED:
                transition(new, JobState.AWAITING_PARENTS, f"waiting for {len(pending) + len(missing)} parent(s)",
                           now=now)
            n = len(job.spec.parents)
            set_condition(new.status.conditions, "Waiting", "True", "WaitingForParents",
                          f"waiting for its {n} parent job(s) to finish: " + names_text(job.spec.parents), now)
            if failed:
                set_condition(new.status.conditions, "ParentFailed", "True", "ParentFailed",
                              f"parent job {failed[0]} failed; this job waits (onParentFailure: Wait)"
                              + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""), now)
            else:
                remove_condition(new.status.conditions, "ParentFailed")
            if missing:
                set_condition(new.status.conditions, "ParentMissing", "True", "ParentNotFound",
                              f"parent job {missing[0]} does not exist", now)
            else:
                remove_condition(new.status.conditions, "ParentMissing")
        if new != job:
            ctx.update(job, new)
        return None

    def _cycle(self, jobs: Informer[Job], job: Job) -> list[str] | None:
        """A cycle through ``job`` among waiting jobs (only they can form one: none of them can
        finish), from the cache; looked for when the job is new or its spec changed."""
        known = self._acyclic  # membership tests only; the handler thread adds and clears

        def parents_of(name: str) -> list[str] | None:
            if name == job.name:
                return job.spec.parents
            if name in known:
                return None
            j = jobs.get(name)
            return j.spec.parents if j is not None and j.status.state in WAITING else None

        cycle = find_cycle(job.name, parents_of)
        if cycle is None:
            self._acyclic.add(job.name)
        return cycle

def names_text(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
