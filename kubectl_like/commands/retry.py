"""``balsamctl retry``: run jobs again (Balsam's ``balsam job modify -s RESTART_READY``).

``balsamctl retry -l SELECTOR [--state FAILED] [--field-selector ...]``, ``retry job NAME...`` or
``retry --all`` moves the chosen jobs to RESTART_READY, where placement finds them room and they
run again (a RUNNING job is killed by its node agent first). Only jobs that ran or ended can be
retried: RUNNING, RUN_DONE, RUN_ERROR, RUN_TIMEOUT, POSTPROCESSED, STAGED_OUT, JOB_FINISHED and
FAILED. A job that has not run yet (CREATED ... PREPROCESSED) would skip its parents and stage-in:
named, it is refused (nothing is written); selected, it is left alone and counted in a warning.
Jobs already RESTART_READY are left as they are.

Every job moves in one CAS write per chunk (``bulk.update_all``), recorded in its history as
a move made by the user. Prints ``job.balsam.io/NAME retried (was STATE)`` per job moved.
"""

from __future__ import annotations

from collections import Counter

import click

from apis import Job, JobState, kind_for, parse_state, transition

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..bulk import select, update_all
from ..completion import complete_field_selector, complete_job_names, complete_label_keys, complete_states
from ..fieldselector import parse_field_selector
from ..printers import object_ref
from ..query import Filters
from ._shared import DRY_RUN, dry_run_suffix
from .create import parse_pairs

S = JobState
#: States a job can be retried from: it ran (or is running), or it ended.
RETRYABLE = frozenset({S.RUNNING, S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.POSTPROCESSED, S.STAGED_OUT,
                       S.JOB_FINISHED, S.FAILED})
MESSAGE = "retried by the user (balsamctl retry)"


def job_names(args: tuple[str, ...]) -> list[str]:
    """``[job|jobs] NAME...`` or ``job/NAME ...`` → names; any other kind is refused."""
    names: list[str] = []
    for i, a in enumerate(args):
        k, sep, name = a.partition("/")
        if sep:
            if kind_for(k) is not Job:
                raise CLIError(f"retry only applies to jobs, not {kind_for(k).PLURAL}")
            names.append(name)
            continue
        if i == 0:
            try:
                kind = kind_for(a)
            except Exception:  # noqa: BLE001 - not a kind: a job name
                kind = None
            if kind is not None:
                if kind is not Job:
                    raise CLIError(f"retry only applies to jobs, not {kind.PLURAL}")
                continue
        names.append(a)
    return names


def parse_states(states: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for s in states:
        try:
            st = parse_state(s)
        except ValueError as e:
            raise CLIError(str(e)) from None
        if st not in RETRYABLE and st is not S.RESTART_READY:
            raise CLIError(f"--state {st.value}: such jobs have not run yet, so there is nothing to retry "
                           f"(retry moves jobs in {', '.join(sorted(s.value for s in RETRYABLE))})")
        out.append(st.value)
    return tuple(out)


def move(job: Job) -> Job | None:
    """``job`` moved to RESTART_READY (None: already there); CLIError when it has not run yet."""
    if job.status.state is S.RESTART_READY:
        return None
    if job.status.state not in RETRYABLE:
        raise CLIError(f'job "{job.name}" is {job.status.state.value}: it has not run yet, so there is nothing '
                       "to retry (nothing was retried)")
    new = job.model_copy(deep=True)
    transition(new, S.RESTART_READY, MESSAGE, by_user=True)
    return new


@click.command("retry")
@click.argument("args", nargs=-1, metavar="[job] [NAME...]", shell_complete=complete_job_names)
@click.option("-l", "--selector", default=None, metavar="SELECTOR", shell_complete=complete_label_keys,
              help="Retry the jobs the label selector selects.")
@click.option("--state", "states", multiple=True, metavar="STATE", shell_complete=complete_states,
              help="Only jobs in this state (repeatable), e.g. FAILED.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE", shell_complete=complete_label_keys,
              help="Only jobs with this tag.")
@click.option("--field-selector", default=None, metavar="SELECTOR", shell_complete=complete_field_selector,
              help="Retry the jobs the field selector selects (e.g. spec.app=hello).")
@click.option("--all", "all_", is_flag=True, help="Every job of the namespace that ran or ended.")
@DRY_RUN
@common_options
def command(args: tuple[str, ...], selector: str | None, states: tuple[str, ...], tags: tuple[str, ...],
            field_selector: str | None, all_: bool, dry_run: str) -> None:
    """Run jobs again: move them to RESTART_READY (Balsam's `job modify -s RESTART_READY`).

    \b
    balsamctl retry -l experiment=foo --state FAILED
    balsamctl retry job my-job            # also a JOB_FINISHED job whose spec you changed
    balsamctl retry --field-selector spec.app=hello,status.state=RUN_TIMEOUT --dry-run
    """
    names = job_names(args)
    filters = Filters.parse(selector, parse_states(states), parse_pairs(tags, "--tag"), None, None,
                            fields=parse_field_selector(field_selector, Job))
    ctx = get_ctx()
    objs, missing = select(ctx, Job, names, filters, all_)
    if missing:
        raise missing[0]
    jobs: list[Job] = [o for o in objs if isinstance(o, Job)]
    skipped: Counter[str] = Counter()
    if not names:  # selected: jobs that have not run yet are left alone (named ones are refused)
        skipped.update(j.status.state.value for j in jobs if j.status.state not in RETRYABLE
                       and j.status.state is not S.RESTART_READY)
        jobs = [j for j in jobs if j.status.state in RETRYABLE or j.status.state is S.RESTART_READY]
    if not jobs and not skipped:
        click.echo(f"No resources found in {ctx.namespace} namespace.", err=True)
        return
    moved = update_all(ctx.registry, Job, jobs, move, dry_run=dry_run)
    suffix = dry_run_suffix(dry_run)
    for old, _new in moved:
        click.echo(f"{object_ref(old)} retried (was {old.status.state.value}){suffix}")
    moved_names = {o.name for o, _ in moved}
    for j in jobs:
        if j.name not in moved_names and j.status.state is S.RESTART_READY:
            click.echo(f"{object_ref(j)} unchanged (already {S.RESTART_READY.value})")
    if skipped:
        what = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
        ctx.warn(f"{sum(skipped.values())} selected job(s) have not run yet and were not retried ({what})")

