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

* Where it may run: a job naming a Site (``spec.site``) other than the one its App is bound
  to (``App.spec.site``) would never be placed (the App's command exists only there).
* What its site can give (``check_job_fits``), judged against the Site it names, else its
  App's Site, else every Site of its namespace (it is refused only when none could run it;
  with no Site yet, nothing is checked, as one may be made later):
  - ``numNodes`` over the largest ``maxNodes`` of ``Site.spec.queues`` (when it lists
    queues): no allocation of that site can ever be that large;
  - ``wallTimeMin`` over the largest ``maxWallTimeMin`` of those queues;
  - CPUs per node (``ranksPerNode * threadsPerRank / threadsPerCore``) over the Site's
    ``nodeDefaults.cpus``, GPUs per node (``ranksPerNode * gpusPerRank``) over its
    ``nodeDefaults.gpus``, each only when set above its default (1 CPU, 0 GPUs: what a Site
    whose agents report their own node carries, so nothing is known beforehand).
* Its parents must exist: the registry's own reference compares (``Job.references``),
  in the same transaction as the write.

Updated jobs are checked when their parameters, App, site or resources change. The App is
read once per name per write, the namespace's Sites once per namespace; the same write's own
Apps and Sites count.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import Invalid
from ._kinds import App, Job, NodeDefaults, Site, created_jobs
from ._meta import Resource
from ._registry import ADMISSION_CHECKS, Registry
from ._templates import TemplateError, template_variables


def app_parameter_rules(app: App) -> tuple[frozenset[str], frozenset[str]]:
    """(required, known) parameter names of ``app``: what every job of it is checked against,
    worked out once per App and write (a bulk create of 10k jobs of one App: once, not 10k times)."""
    declared = app.spec.parameters
    required = {n for n, p in declared.items() if p.required and p.default is None}
    names = set(declared)
    if app.spec.command:
        try:  # a placeholder the App forgot to declare is still one the job must fill
            used = template_variables(app.spec.command)
        except TemplateError:
            used = frozenset()
        required |= used - names
        names |= used
    return frozenset(required), frozenset(names)


def check_job_parameters(job: Job, app: App, rules: tuple[frozenset[str], frozenset[str]] | None = None) -> None:
    """Raise Invalid naming the first parameter of ``job`` that ``app`` would refuse at launch
    (``rules``: ``app_parameter_rules(app)``, when the caller has it)."""
    required, names = rules or app_parameter_rules(app)
    given = job.spec.parameters
    keys = given.keys()
    if keys >= required and (app.spec.python is not None or keys <= names):
        return  # the usual case, in two set comparisons
    missing = [n for n in required if n not in given]
    if missing:
        missing.sort()
        raise Invalid(f'{_invalid_job(job)}: spec.parameters.{missing[0]}: Required value: App "{app.name}" requires '
                      f"parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if app.spec.python is None:
        unknown = [g for g in given if g not in names]
        if unknown:
            unknown.sort()
            raise Invalid(f'{_invalid_job(job)}: spec.parameters.{unknown[0]}: Invalid value: App "{app.name}" '
                          f"declares no parameter {', '.join(repr(u) for u in unknown)} "
                          f"(declared: {', '.join(sorted(names)) or 'none'})")


def _invalid_job(job: Job) -> str:
    """The start of an error about ``job`` (built only when there is one)."""
    name = job.metadata.name or f"{job.metadata.generate_name or ''}*"
    return f'{Job.resource_name()} "{name}" is invalid'


# A stored Site always carries nodeDefaults (its JSON has every field), so "declared" is read
# as "not the default": ``cpus: 1`` / ``gpus: 0`` are what ``balsamctl init`` writes for a site
# whose agents report their own node, and they never refuse a job.
_UNSET_CPUS = NodeDefaults.model_fields["cpus"].default
_UNSET_GPUS = NodeDefaults.model_fields["gpus"].default


def _site_refusal(job: Job, site: Site) -> str | None:
    """Why ``site`` can never run ``job`` ("spec.resources.x: Invalid value: ..."), or None."""
    r, spec = job.spec.resources, site.spec
    queues = spec.queues.values()
    if queues:
        most = max(q.max_nodes for q in queues)
        if r.num_nodes > most:
            return (f"spec.resources.numNodes: Invalid value: {r.num_nodes}: more nodes than any queue of "
                    f'Site "{site.name}" allows (largest maxNodes: {most})')
        longest = max(q.max_wall_time_min for q in queues)
        if r.wall_time_min > longest:
            return (f"spec.resources.wallTimeMin: Invalid value: {r.wall_time_min:g}: longer than any queue of "
                    f'Site "{site.name}" allows (largest maxWallTimeMin: {longest:g})')
    nd = spec.node_defaults
    if nd.cpus > _UNSET_CPUS and r.cpus_per_node > nd.cpus:
        return (f"spec.resources.ranksPerNode: Invalid value: {r.ranks_per_node}: needs {r.cpus_per_node} "
                f'CPUs per node; a node of Site "{site.name}" has {nd.cpus} (nodeDefaults.cpus)')
    if nd.gpus > _UNSET_GPUS and r.gpus_per_node > nd.gpus:
        return (f"spec.resources.gpusPerRank: Invalid value: {r.gpus_per_rank:g}: needs {r.gpus_per_node} "
                f'GPUs per node; a node of Site "{site.name}" has {nd.gpus} (nodeDefaults.gpus)')
    return None


def check_job_fits(job: Job, app: App | None, sites: Sequence[Site]) -> None:
    """Raise Invalid when ``job`` can never run: it names a Site other than its App's, or no
    Site it may run at (``sites``: its namespace's) could ever give what it asks for."""
    bound = app.spec.site if app is not None else None
    if job.spec.site and bound and job.spec.site != bound:
        raise Invalid(f'{_invalid_job(job)}: spec.site: Invalid value: "{job.spec.site}": App "{app.name}" '  # type: ignore[union-attr]
                      f'runs only at Site "{bound}"')
    target = job.spec.site or bound
    candidates = [s for s in sites if s.name == target] if target else list(sites)
    if not candidates:
        return  # no such Site yet: its reference check (spec.site) or a later Site decides
    why = [_site_refusal(job, s) for s in candidates]
    if all(why):
        raise Invalid(f"{_invalid_job(job)}: {why[0]}")


def admit_job_parameters(registry: Registry, creates: Sequence[Resource],
                         updates: Sequence[tuple[Resource, Resource]]) -> None:
    """The admission check ``Registry.write`` runs on every write (``ADMISSION_CHECKS``). An App
    that does not exist is left to the registry's own "app exists" compare."""
    jobs, others = created_jobs(creates)
    for old, new in updates:
        if isinstance(new, Job) and isinstance(old, Job) and new.spec is not old.spec and (
            new.spec.parameters != old.spec.parameters or new.spec.app != old.spec.app
            or new.spec.site != old.spec.site or new.spec.resources != old.spec.resources
        ):
            jobs.append(new)
    if not jobs:
        return
    written = [*others, *(n for _, n in updates)]
    apps: dict[tuple[str, str], App | None] = {
        (o.metadata.namespace, o.name): o for o in written if isinstance(o, App)
    }
    sites: dict[str, list[Site]] = {}
    rules: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}
    for job in jobs:
        ns = job.metadata.namespace
        key = (ns, job.spec.app)
        if key not in apps:
            apps[key] = registry.try_get(App, job.spec.app, ns)
        app = apps[key]
        if app is not None:
            rule = rules.get(key)
            if rule is None:
                rule = rules[key] = app_parameter_rules(app)
            check_job_parameters(job, app, rule)
        if ns not in sites:
            own = {o.name: o for o in written if isinstance(o, Site) and o.metadata.namespace == ns}
            stored = [s for s in registry.list(Site, ns)[0] if s.name not in own]
            sites[ns] = [*stored, *own.values()]
        if sites[ns] or job.spec.site:  # with neither, nothing can refuse it
            check_job_fits(job, app, sites[ns])


if admit_job_parameters not in ADMISSION_CHECKS:
    ADMISSION_CHECKS.append(admit_job_parameters)
