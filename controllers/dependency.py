"""DependencyReconciler: CREATED → AWAITING_PARENTS | READY; AWAITING_PARENTS → READY the
moment the last parent is JOB_FINISHED (found through the children-by-parent index, not a
scan). A FAILED parent keeps the child waiting with a ``ParentFailed`` condition naming it
(``onParentFailure: Wait``, Balsam's behaviour) or fails it, and its children in turn
(``Fail``). Then no-op steps collapse into the same write (READY → STAGED_IN → PREPROCESSED).

With ``placement_binds_ready`` (the manager's default set of reconcilers), a job whose every
step up to PREPROCESSED is a no-op (``controllers/_steps.steps_to_preprocessed``: parents all
finished or none, no stage-in, an App without a ``preprocess`` hook) is left to placement,
which releases it in the write that binds it: one writer per move, and no write, event or
reconcile here for a plain job (issue 19). Jobs with pending, failed or missing parents are
still this reconciler's, as are jobs with transfers or hooks, whatever placement does.

A waiting job carries ``Waiting``/``WaitingForParents`` (its message stays the same while it
waits, so no write per finished parent; ``describe`` adds the parents' states when it reads).
An edit of ``spec.parents`` that closes a cycle (a create cannot: ``apis/_dag.py`` refuses it)
FAILs every waiting job of the cycle with ``Failed``/``DependencyCycle`` naming the cycle —
looked for only when the spec changed since the job was last observed, so it costs nothing
on the hot path. ``status.observedGeneration`` records the spec generation acted on."""

from __future__ import annotations

from collections.abc import Callable

from apis import App, Job, JobState, remove_condition, set_condition, transition, utcnow
from apis._dag import cycle_text, find_cycle
from apis._states import release_steps

from ._controller import Context, Request, Result
from ._informer import Informer
from ._jobcache import crossed_an_end, job_state, jobs_of_app
from ._steps import cached_release_steps, collapse_from_ready, take_release_steps
from .hooks import HookRunner

WAITING = (JobState.CREATED, JobState.AWAITING_PARENTS)


class DependencyReconciler:
    name = "dependency"

    def __init__(self, hooks: HookRunner, placement_binds_ready: bool = False) -> None:
        self.hooks = hooks
        #: Placement releases the jobs whose steps up to PREPROCESSED are all no-ops (it must
        #: run with the same ``hooks``: ``default_reconcilers`` builds the pair).
        self.placement_binds_ready = placement_binds_ready
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
        apps: Informer[App] = informers["App"]

        def on_job(typ: str, old: Job | None, new: Job | None) -> None:
            # (A status write shares the spec: no parents to compare. ``indexed`` before
            # ``by_index``: most jobs are nobody's parent, and this runs for every event.)
            relinked = (old is not None and new is not None and old.spec is not new.spec
                        and old.spec.parents != new.spec.parents) or \
                (old is None and new is not None and jobs.indexed("children", new.name))
            if relinked:
                self._acyclic.clear()
            elif new is None or new.status.state not in WAITING:
                self._acyclic.discard((new or old).name)  # type: ignore[union-attr]
            if new is not None and new.status.state in WAITING and not (
                    not new.spec.parents and self._placements(new, apps, jobs)):
                enqueue(Request(new.name, new.namespace))  # (a parentless plain job: placement's)
            # A parent reached an end, vanished, or left an end (a user's retry): look at its
            # children (one that placement would have released may have to wait again).
            cur = new or old
            if cur is not None and crossed_an_end(old, new) and jobs.indexed("children", cur.name):
                for child in jobs.by_index("children", cur.name):
                    if child.status.state in WAITING:
                        enqueue(Request(child.name, child.namespace))

        def on_app(typ: str, old: App | None, new: App | None) -> None:
            # An App edited or deleted may add a hook or stage-in slot to a job placement was
            # to release (a new App changes nothing: its jobs were ours while it was missing).
            if typ == "ADDED" or (old is not None and new is not None and old.spec == new.spec):
                return
            for j in jobs_of_app(jobs, (new or old).name, WAITING):  # type: ignore[union-attr]
                enqueue(Request(j.name, j.namespace))

        jobs.add_handler(on_job)  # type: ignore[arg-type]
        if self.placement_binds_ready:
            apps.add_handler(on_app)  # type: ignore[arg-type]

    def _placements(self, job: Job, apps: Informer[App], jobs: Informer[Job]) -> bool:
        """Whether placement releases ``job`` (every step up to PREPROCESSED a no-op)."""
        return self.placement_binds_ready and cached_release_steps(job, apps, jobs, self.hooks) is not None

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
            apps: Informer[App] = ctx.caches["App"]
            if self._placements(job, apps, jobs):
                return None  # placement releases it in the write that binds it
            take_release_steps(new, release_steps(new.status.state, bool(job.spec.parents)), now)
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
