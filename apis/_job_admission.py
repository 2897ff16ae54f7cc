"""Admission of Jobs against their App: what would make the job FAIL once placed is refused
when it is written, on every surface (``apply``, ``create job``, ``Job(...).save()``,
``bulk_create``), with one error and nothing written.

* A command App (``spec.command``) renders its template with exactly the parameters it
  declares (``apis._templates.render_command``): a job that leaves out a required parameter
  (no default) or passes one the App does not declare would fail at launch, after its
  allocation waited in the queue. Both are refused here. (A placeholder of the template that
  the App does not declare counts as a required parameter.)
* A Python App (``spec.python``): a required parameter of ``run()`` left out is refused; extra
  keywords are left to ``run()`` (which may take ``**kwargs``; ``App.submit`` binds them to
  its signature before writing).

Updated jobs are checked when their parameters or App change. The App is read once per name
per write; the same write's own Apps count.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import Invalid
from ._kinds import App, Job
from ._meta import Resource
from ._registry import ADMISSION_CHECKS, Registry
from ._templates import TemplateError, template_variables


def check_job_parameters(job: Job, app: App) -> None:
    """Raise Invalid naming the first parameter of ``job`` that ``app`` would refuse at launch."""
    declared = app.spec.parameters
    given = job.spec.parameters
    name = job.metadata.name or f"{job.metadata.generate_name or ''}*"
    where = f'{Job.resource_name()} "{name}" is invalid'
    required = {n for n, p in declared.items() if p.required and p.default is None}
    names = set(declared)
    if app.spec.command:
        try:  # a placeholder the App forgot to declare is still one the job must fill
            used = template_variables(app.spec.command)
        except TemplateError:
            used = frozenset()
        required |= used - names
        names |= used
    missing = sorted(n for n in required if n not in given)
    if missing:
        raise Invalid(f'{where}: spec.parameters.{missing[0]}: Required value: App "{app.name}" requires '
                      f"parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if app.spec.python is None:
        unknown = sorted(set(given) - names)
        if unknown:
            raise Invalid(f'{where}: spec.parameters.{unknown[0]}: Invalid value: App "{app.name}" declares no '
                          f"parameter {', '.join(repr(u) for u in unknown)} "
                          f"(declared: {', '.join(sorted(names)) or 'none'})")


def admit_job_parameters(registry: Registry, creates: Sequence[Resource],
                         updates: Sequence[tuple[Resource, Resource]]) -> None:
    """The admission check ``Registry.write`` runs on every write (``ADMISSION_CHECKS``). An App
    that does not exist is left to the registry's own "app exists" compare."""
    jobs = [o for o in creates if isinstance(o, Job)]
    for old, new in updates:
        if isinstance(new, Job) and isinstance(old, Job) and new.spec is not old.spec and (
            new.spec.parameters != old.spec.parameters or new.spec.app != old.spec.app
        ):
            jobs.append(new)
    if not jobs:
        return
    written = [*creates, *(n for _, n in updates)]
    apps: dict[tuple[str, str], App | None] = {
        (o.metadata.namespace, o.name): o for o in written if isinstance(o, App)
    }
    for job in jobs:
        key = (job.metadata.namespace, job.spec.app)
        if key not in apps:
            apps[key] = registry.try_get(App, job.spec.app, job.metadata.namespace)
        app = apps[key]
        if app is not None:
            check_job_parameters(job, app)


if admit_job_parameters not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_job_parameters)
