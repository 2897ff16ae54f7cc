"""``ApplicationDefinition``: Balsam's way of declaring an App as a Python class.

    class Hello(ApplicationDefinition):
        site = "laptop"
        command_template = "echo Hello, {{ say_hello_to }}!"

        def postprocess(self):
            self.job.data = {**self.job.data, "greeted": True}

    class Adder(ApplicationDefinition):
        def run(self, x, y):
            return x + y

    Hello.sync()                                    # the App resource "hello"
    job = Adder.submit("test/123", x=3, y=7)        # a Job (saved)
    assert job.result() == 10

The App resource takes the class's name in lowercase (``Adder`` → ``adder``; ``_`` becomes
``-``; ``app_name`` overrides). ``sync()`` writes it: command template, parameters (inferred
from the template's variables, or from ``run()``'s signature, unless ``parameters`` says
more), transfer slots, environment, cleanup files, shell preamble, and ``python:`` — the
class by module path, or by value (cloudpickle) when it cannot be imported by path (defined
in ``__main__``, a notebook, or a function). ``python.hooks`` lists the hooks the class
defines: the controllers run those, out of process, and take the default step for the others.

Hooks see the job as ``self.job`` and may set ``self.job.state``, change ``self.job.data``
(assigning a new dict, or in place) and other fields, and create Jobs (``Job.objects.create``,
``bulk_create``, ``App.submit``): those are created in the same write as the hook's step.
A hook that leaves the state alone takes the default: ``preprocess`` → PREPROCESSED,
``postprocess`` → POSTPROCESSED, ``handle_error`` → FAILED (or RESTART_READY when the job's
retry policy allows), ``handle_timeout`` → RESTART_READY while the retry limit allows (3 by
default), then FAILED. The base class's hooks do nothing, so ``super().handle_timeout()``
keeps that bound.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cloudpickle
from pydantic import BaseModel

from ._balsam import app_name_of, app_resource_name
from ._codec import copier
from ._context import current as current_client
from ._errors import AlreadyExists, Conflict, DoesNotExist, Invalid, NotFound
from ._kinds import App, Job, validate_workdir
from ._pycodec import b64pickle, b64unpickle, encode_params
from ._templates import template_variables

if TYPE_CHECKING:
    from ._registry import Registry

#: ``map()``: jobs in its first write (small, so that the site starts at once), then per write.
MAP_FIRST_CHUNK = 64
MAP_CHUNK = 512

HOOKS = ("preprocess", "postprocess", "handle_error", "handle_timeout")

#: Job keywords ``submit`` recognises; every other keyword is a parameter of the App.
JOB_KEYWORDS = frozenset({
    "name", "namespace", "tags", "labels", "annotations", "generate_name", "data", "parameters",
    "parent_ids", "parents", "transfers", "priority", "retry", "on_parent_failure", "suspend",
    "site_name", "num_nodes", "ranks_per_node", "threads_per_rank", "threads_per_core", "gpus_per_rank",
    "node_packing_count", "launch_params", "wall_time_min",
})

def _defines(cls: type, attr: str) -> bool:
    """Whether ``cls`` (or a base below ApplicationDefinition) defines ``attr`` itself."""
    for k in cls.__mro__:
        if k is ApplicationDefinition:
            return False
        if attr in vars(k):
            return True
    return False


def _importable_by_path(cls: type) -> bool:
    mod = sys.modules.get(cls.__module__)
    if cls.__module__ in ("__main__", "__mp_main__") or mod is None or not getattr(mod, "__file__", None):
        return False
    if "<" in cls.__qualname__:  # defined in a function
        return False
    obj: Any = mod
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def _by_value_payload(cls: type) -> str:
    mod = sys.modules.get(cls.__module__)
    register = mod is not None and cls.__module__ not in ("__main__", "__mp_main__") and "<" not in cls.__qualname__
    if register:
        cloudpickle.register_pickle_by_value(mod)
    try:
        return b64pickle(cls)
    finally:
        if register:
            cloudpickle.unregister_pickle_by_value(mod)


class ApplicationDefinition:
    """Base class of Python-declared Apps (see the module docstring)."""

    #: Site whose agents run this App (Balsam's ``site``); None: any.
    site: ClassVar[str | None] = None
    #: Jinja2 command template; every value substituted is shell-quoted.
    command_template: ClassVar[str] = ""
    #: ``{name: {"required": bool, "default": str, "help": str}}``, merged over the inferred ones.
    parameters: ClassVar[dict[str, Any]] = {}
    environment_variables: ClassVar[dict[str, str]] = {}
    cleanup_files: ClassVar[list[str]] = []
    #: ``{slot: {"direction": "in"|"out", "local_path": ..., "required": ..., "recursive": ..., "description": ...}}``
    transfers: ClassVar[dict[str, Any]] = {}
    #: Resource name of the App (default: from the class name).
    app_name: ClassVar[str | None] = None
    #: Seconds a hook of this App may run before it is killed and the job FAILED (None: the site's default).
    hook_timeout: ClassVar[float | None] = None
    #: ``run()`` in a fresh process per job instead of a warm worker reused across jobs (README).
    fresh_process: ClassVar[bool] = False
    description: ClassVar[str] = ""

    _synced: ClassVar[dict[tuple[int, str, str], str]] = {}
    _sync_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, job: Job | bytes | str | None = None) -> None:
        self._job_src = job

    @property
    def job(self) -> Job:
        """The Job this hook (or ``run()``) works on."""
        src = self._job_src
        if isinstance(src, (bytes, str)):
            src = Job.model_validate_json(src)
            self._job_src = src
        if src is None:
            raise AttributeError("this ApplicationDefinition instance is not bound to a job")
        return src

    @job.setter
    def job(self, value: Job) -> None:
        self._job_src = value

    # --- hooks: the base ones do nothing, so the default step follows --------------------

    def shell_preamble(self) -> str | list[str]:
        """Shell lines run before the command (``module load ...``)."""
        return ""

    def preprocess(self) -> None:
        """Called in STAGED_IN; the job goes PREPROCESSED unless the hook sets another state."""

    def postprocess(self) -> None:
        """Called in RUN_DONE; the job goes POSTPROCESSED unless the hook sets another state."""

    def handle_error(self) -> None:
        """Called in RUN_ERROR; the job goes FAILED (or per its retry policy) unless the hook sets a state."""

    def handle_timeout(self) -> None:
        """Called in RUN_TIMEOUT; the job goes RESTART_READY (bounded retries) unless the hook sets a state."""

    # --- the App resource ------------------------------------------------------------------

    @classmethod
    def resource_name(cls) -> str:
        """The App's resource name: ``app_name``, else the class name in lowercase."""
        return cls.app_name or app_resource_name(cls.__name__)

    @classmethod
    def is_python_app(cls) -> bool:
        """Whether the class defines ``run()`` (a Python App) rather than a command template."""
        return callable(getattr(cls, "run", None))

    @classmethod
    def defined_hooks(cls) -> list[str]:
        """The hooks this class defines itself (the others take their default step)."""
        return [h for h in HOOKS if _defines(cls, h)]

    @classmethod
    def _parameters(cls) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if cls.is_python_app():
            sig = inspect.signature(cls.run)  # type: ignore[attr-defined]
            for i, (name, p) in enumerate(sig.parameters.items()):
                if i == 0 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                    continue  # self, *args, **kwargs
                required = p.default is inspect.Parameter.empty
                out[name] = {"required": required, "default": None if required else repr(p.default)[:200]}
        elif cls.command_template:
            for name in sorted(template_variables(cls.command_template)):
                out[name] = {"required": True}
        for name, p in (cls.parameters or {}).items():
            user = dict(p) if isinstance(p, dict) else {"default": None if p is None else str(p)}
            merged = dict(out.get(name, {"required": True}))
            merged.update(user)
            if merged.get("default") is not None:
                merged["default"] = str(merged["default"])
                if "required" not in user:
                    merged["required"] = False
            out[name] = merged
        return out

    @classmethod
    def _preamble(cls) -> str | None:
        pre: Any = vars(cls).get("shell_preamble") if isinstance(vars(cls).get("shell_preamble"), str) else None
        if pre is None:
            try:
                pre = cls.shell_preamble(cls.__new__(cls))
            except Exception as e:  # noqa: BLE001
                raise Invalid(f"{cls.__name__}.shell_preamble() raised {type(e).__name__}: {e}") from None
        if isinstance(pre, (list, tuple)):
            pre = "\n".join(str(x) for x in pre)
        return str(pre).strip() or None

    @classmethod
    def to_app(cls, namespace: str = "default", *, by_value: bool | None = None) -> App:
        """The App resource this class declares (not saved)."""
        value = by_value if by_value is not None else not _importable_by_path(cls)
        python: dict[str, Any] = {
            "module": None if value else cls.__module__,
            "class": cls.__qualname__,
            "payload": _by_value_payload(cls) if value else None,
            "hooks": cls.defined_hooks(),
            "hookTimeoutSeconds": cls.hook_timeout,
            "freshProcess": True if cls.fresh_process else None,
        }
        spec: dict[str, Any] = {
            "site": cls.site,
            "parameters": cls._parameters(),
            "transfers": {k: dict(v) for k, v in (cls.transfers or {}).items()},
            "environment": {str(k): str(v) for k, v in (cls.environment_variables or {}).items()},
            "cleanupFiles": list(cls.cleanup_files or []),
            "preamble": cls._preamble(),
            "python": {k: v for k, v in python.items() if v is not None},
            "description": (cls.description or inspect.cleandoc(vars(cls).get("__doc__") or "").split("\n")[0])[:500],
        }
        if not cls.is_python_app():
            if not cls.command_template:
                raise Invalid(f"{cls.__name__}: define command_template or a run() method")
            spec["command"] = textwrap.dedent(cls.command_template).strip()
        return App(metadata={"name": cls.resource_name(), "namespace": namespace}, spec=spec)  # type: ignore[arg-type]

    @classmethod
    def _registry(cls) -> Registry:
        reg: Registry = current_client().registry
        return reg

    @classmethod
    def sync(cls, rename_from: str | None = None, *, namespace: str | None = None,
             by_value: bool | None = None) -> App:
        """Create or update the App resource (``balsamctl get apps`` lists it) in ``namespace``
        (default: the current client's, see ``apis.default_namespace``).

        ``rename_from``: the App's former name (or class name), as in Balsam: the App is written
        under its new name, the jobs of the old one are moved to it and the old one is deleted,
        in one store transaction. Refused (nothing written) while a job of it runs, when the
        old App does not exist, or when the new name is taken."""
        reg = cls._registry()
        namespace = namespace if namespace is not None else current_client().namespace
        want = cls.to_app(namespace, by_value=by_value)
        if rename_from is not None and app_name_of(rename_from) != want.name:
            app = _rename(reg, app_name_of(rename_from), want)
            with cls._sync_lock:
                cls._synced[(id(reg), namespace, cls.__qualname__)] = app.name
            return app
        for _ in range(20):
            cur = reg.try_get(App, want.name, namespace)
            try:
                if cur is None:
                    app = reg.create(want)
                elif cur.spec == want.spec:
                    app = cur
                else:
                    new = cur.model_copy(deep=True)
                    new.spec = want.spec
                    app = reg.update(cur, new)
            except (AlreadyExists, NotFound, Conflict):
                continue
            with cls._sync_lock:
                cls._synced[(id(reg), namespace, cls.__qualname__)] = app.name
            return app
        raise Invalid(f"could not sync app {want.name}: it kept changing")

    # --- loading Apps back as classes (Balsam's load_by_*) ----------------------------

    @classmethod
    def load_by_name(cls, app_name: str, site_name: str | None = None) -> type[ApplicationDefinition]:
        """The class of the App named ``app_name`` (its resource name, or the class name it was
        declared with: ``"Hello"`` finds ``hello``), in the current client's namespace; with
        ``site_name``, only an App of that site (or of any site). ``App.DoesNotExist`` otherwise."""
        client = current_client()
        app = client.registry.try_get(App, app_name_of(app_name), client.namespace)
        if app is None or (site_name is not None and app.spec.site not in (None, site_name)):
            where = f" of site {site_name!r}" if site_name is not None else ""
            raise DoesNotExist(f"no App {app_name!r}{where} in namespace {client.namespace!r}")
        return app_class(app)

    @classmethod
    def load_by_id(cls, app_id: str) -> type[ApplicationDefinition]:
        """The class of the App whose id (its resource name) is ``app_id``."""
        return cls.load_by_name(app_id)

    @staticmethod
    def load_by_site(site: Any) -> dict[str, type[ApplicationDefinition]]:
        """Every App a site runs (its own and those that name no site), by class name: ``site``
        is a Site's name or a Site."""
        name = site if isinstance(site, str) else getattr(site, "id", None) or getattr(site, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError("site must be a Site's name or a Site")
        client = current_client()
        apps, _ = client.registry.list(App, client.namespace)
        out: dict[str, type[ApplicationDefinition]] = {}
        for app in apps:
            if app.spec.site in (None, name):
                k = app_class(app)
                out[k.__name__] = k
        return out

    @classmethod
    def _ensure_app(cls, namespace: str) -> str:
        """The App's name; syncs it once per process when it does not exist yet (an existing
        App is used as it is: ``sync()`` is how it is updated)."""
        reg = cls._registry()
        key = (id(reg), namespace, cls.__qualname__)
        name = cls._synced.get(key)
        if name is not None:
            return name
        name = cls.resource_name()
        if reg.try_get(App, name, namespace) is None:
            return cls.sync(namespace=namespace).name
        with cls._sync_lock:
            cls._synced[key] = name
        return name

    @classmethod
    def submit(cls, workdir: str | Path, save: bool = True, **kwargs: Any) -> Job:
        """A Job of this App in ``workdir`` (relative to the site's ``data/``). Job keywords
        (``tags``, ``data``, ``parent_ids``, ``num_nodes``, ...) go to the Job, every other
        keyword is a parameter. ``save=False`` returns it unsaved (for ``bulk_create``)."""
        job_kw = {k: v for k, v in kwargs.items() if k in JOB_KEYWORDS}
        params = dict(job_kw.pop("parameters", None) or {})
        params.update({k: v for k, v in kwargs.items() if k not in JOB_KEYWORDS})
        job = cls._new_job(str(workdir), params, cls._job_keywords(job_kw))
        if save:
            job.save()
        return job

    @classmethod
    def _job_keywords(cls, job_kw: dict[str, Any]) -> dict[str, Any]:
        """The Job keywords of ``submit``/``map`` with the namespace and this App resolved (the
        App synced once if it does not exist): what every job of one call shares."""
        namespace = str(job_kw.get("namespace") or current_client().namespace)
        return {**job_kw, "namespace": namespace, "app_id": cls._ensure_app(namespace)}

    @classmethod
    def _new_job(cls, workdir: str, params: dict[str, Any], shared: dict[str, Any]) -> Job:
        """One unsaved Job: its parameters checked against ``run()`` (or the declared ones)
        and encoded, the Job validated as any Job is."""
        cls._check_parameters(params)
        encoded = encode_params(params) if cls.is_python_app() else params
        return Job.model_validate({**shared, "workdir": workdir, "parameters": encoded})

    @classmethod
    def _job_builder(cls, shared: dict[str, Any]) -> Callable[[str, dict[str, Any]], Job]:
        """``_new_job(workdir, params, shared)`` for the many jobs of one ``map`` call.

        For a Python app, the Job of ``shared`` is validated once (a template) and each job
        is a copy of it (:func:`_fresh_copier`: every model, dict and list its own, as a
        validation makes them) with its own ``workdir`` and ``parameters``, the only fields
        that differ: the workdir checked by the Job's own rule (``validate_workdir``) and the
        parameters by ``run()``'s signature and encoded to strings, which is all a validation
        of those two fields does. A command App's parameters take the Job's own coercion:
        each of its jobs is validated whole (issue 14p)."""
        if not cls.is_python_app():
            return lambda workdir, params: cls._new_job(workdir, params, shared)
        check = cls._check_parameters
        made: list[Any] = []  # the template and its copiers, made with the first job

        def build(workdir: str, params: dict[str, Any]) -> Job:
            if not made:
                try:
                    template = Job.model_validate({**shared, "workdir": ".", "parameters": {}})
                except ValueError:  # the shared keywords are refused: as they always were, per job
                    return cls._new_job(workdir, params, shared)
                made.extend((template, _fresh_copier(template), _fresh_copier(template.spec)))
            template, copy_job, copy_spec = made
            try:
                wd = validate_workdir(workdir)
            except ValueError:  # refused as a Job refuses it, with the same error
                return cls._new_job(workdir, params, shared)
            check(params)
            spec = copy_spec(template.spec, {"workdir": wd, "parameters": encode_params(params)})
            return copy_job(template, {"spec": spec})

        return build

    @classmethod
    def map(cls, workdir: str | Callable[[int], str], args: Iterable[Mapping[str, Any]], *,
            first_chunk: int = MAP_FIRST_CHUNK, chunk: int = MAP_CHUNK, **job_kw: Any) -> list[Job]:
        """One saved Job per item of ``args`` (the ``run()`` keywords, or the parameters of a
        command App), created in bulk: ``Adder.map("adders/{i}", ({"x": i, "y": 1} for i in
        range(n)))``. ``workdir``: a format string of ``{i}`` (the item's index), or a function
        of it. ``job_kw``: Job keywords shared by every job (``tags``, ``node_packing_count``...).

        Each job is checked as ``submit()`` checks it (``run()``'s signature, the Job's own
        validation), but they are written ``first_chunk`` and then ``chunk`` at a time, each
        chunk in one transaction as soon as it is built: the site starts the first jobs while
        the rest are being made (a bulk_create of them all would start nothing before the
        last one is built). A refused chunk raises (jobs of earlier chunks stay created, as
        with ``bulk_create``). Returns the created jobs, in the order of ``args``."""
        unknown = sorted((set(job_kw) - JOB_KEYWORDS) | (set(job_kw) & {"parameters"}))
        if unknown:
            raise TypeError(f"{cls.__name__}.map(): unknown Job keyword(s) {', '.join(unknown)} "
                            "(run() arguments go in the items of args)")
        name_of = workdir.format if isinstance(workdir, str) else None
        build = cls._job_builder(cls._job_keywords(dict(job_kw)))
        made: list[Job] = []
        todo: list[Job] = []
        size = max(1, first_chunk)
        for i, params in enumerate(args):
            wd = name_of(i=i) if name_of is not None else workdir(i)  # type: ignore[operator]
            todo.append(build(str(wd), dict(params)))
            if len(todo) >= size:
                made += Job.objects.bulk_create(todo)
                todo, size = [], max(1, chunk)
        if todo:
            made += Job.objects.bulk_create(todo)
        return made

    @classmethod
    def _check_parameters(cls, params: dict[str, Any]) -> None:
        sig, declared, keywords = _signatures.get(cls, (None, None, None))
        if declared is None:  # computed once per class: submit() is called per job
            sig = inspect.signature(cls.run) if cls.is_python_app() else None  # type: ignore[attr-defined]
            declared = cls._parameters()
            keywords = _keyword_rules(sig) if sig is not None else None
            _signatures[cls] = (sig, declared, keywords)
        if sig is not None:
            if keywords is not None:  # sig.bind's answer in two set comparisons (its own: 3 µs)
                required, allowed, first = keywords
                keys = params.keys()
                if keys >= required and (keys <= allowed if allowed is not None else first not in keys):
                    return
            try:
                sig.bind(None, **params)
            except TypeError as e:
                raise TypeError(f"{cls.__name__}.run(): {e}") from None
            return
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise Invalid(f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)} "
                          f"(declared: {', '.join(sorted(declared)) or 'none'})")
        missing = sorted(n for n, p in declared.items()
                         if p.get("required", True) and p.get("default") is None and n not in params)
        if missing:
            raise Invalid(f"{cls.__name__}: missing required parameter(s) {', '.join(missing)}")


def _fresh_copier(model: BaseModel) -> Callable[[Any, dict[str, Any]], Any]:
    """``copy(m, assign)``: a copy of ``m`` (shaped as ``model``: the same class and the same
    kinds of field values) that shares nothing mutable with it — each nested model copied
    the same way, each dict and list (private attributes included) copied — with the fields
    in ``assign`` taken as they are. What ``model`` holds decides, once, what each copy
    copies: a ``map`` of 10k jobs makes 10k copies of one template."""
    copy = copier(type(model))
    nested: list[tuple[str, Callable[[Any, dict[str, Any]], Any]]] = []
    containers: list[str] = []
    for name, v in model.__dict__.items():
        if isinstance(v, BaseModel):
            nested.append((name, _fresh_copier(v)))
        elif type(v) in (dict, list):
            containers.append(name)
    private = [k for k, v in (model.__pydantic_private__ or {}).items() if type(v) in (dict, list)]

    def fresh(m: Any, assign: dict[str, Any]) -> Any:
        fields = m.__dict__
        own: dict[str, Any] = {}
        for name, sub in nested:
            if name not in assign:
                own[name] = sub(fields[name], {})
        for name in containers:
            if name not in assign:
                own[name] = fields[name].copy()
        own.update(assign)
        new = copy(m, own)
        priv = new.__pydantic_private__
        if private and priv is not None:
            for k in private:
                priv[k] = priv[k].copy()
        return new

    return fresh


#: ``run()``'s keyword rules: (required, allowed — None: any, with ``**kwargs`` —, the name
#: ``self`` goes by, which a keyword may not repeat).
_Keywords = tuple[frozenset[str], frozenset[str] | None, str | None]


def _keyword_rules(sig: inspect.Signature) -> _Keywords | None:
    """The keyword names of ``run(self, ...)`` that decide whether ``sig.bind(None, **params)``
    succeeds; None when sets of names cannot say (``self`` keyword-only, a positional-only
    parameter after it: only ``bind`` says)."""
    required: set[str] = set()
    allowed: set[str] | None = set()
    first: str | None = None
    for i, p in enumerate(sig.parameters.values()):
        if i == 0:  # self, bound to the positional None
            if p.kind is p.POSITIONAL_OR_KEYWORD:
                first = p.name
            elif p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
                return None
            if p.kind is not p.VAR_POSITIONAL:
                continue
        if p.kind is p.VAR_KEYWORD:
            allowed = None
        elif p.kind is p.POSITIONAL_ONLY:
            return None
        elif p.kind is not p.VAR_POSITIONAL:
            if p.default is p.empty:
                required.add(p.name)
            if allowed is not None:
                allowed.add(p.name)
    return frozenset(required), (None if allowed is None else frozenset(allowed)), first


_signatures: weakref.WeakKeyDictionary[
    type,
    tuple[inspect.Signature | None, dict[str, dict[str, Any]],
          _Keywords | None],
] = weakref.WeakKeyDictionary()


def _rename(reg: Registry, old_name: str, want: App) -> App:
    """``sync(rename_from=old_name)``: the new App, its jobs moved, the old App deleted, in one write."""
    ns = want.metadata.namespace
    old = reg.try_get(App, old_name, ns)
    if old is None:
        raise DoesNotExist(f"cannot rename App {old_name!r}: no such App in namespace {ns!r}")
    if reg.try_get(App, want.name, ns) is not None:
        raise AlreadyExists(App.resource_name(), want.name)
    names = reg.index_names(Job, "app", old_name, ns)
    jobs = [j for j in reg.get_many(Job, names, ns) if j is not None]
    pairs = []
    for j in jobs:
        n = j.model_copy()
        n.spec = j.spec.model_copy(update={"app": want.name})
        pairs.append((j, n))
    created, _ = reg.write(creates=[want], updates=pairs, deletes=[old])
    return created[0]  # type: ignore[return-value]


def app_class(app: App) -> type[ApplicationDefinition]:
    """The ApplicationDefinition an App resource declares: its Python class (imported or
    unpickled), or, for a command App, a class made from its command, parameters, transfer
    slots, environment and site."""
    if app.spec.python is not None:
        return load_app_class(app.spec.python.model_dump(by_alias=True))
    attrs: dict[str, Any] = {
        "app_name": app.name,
        "site": app.spec.site,
        "command_template": app.spec.command or "",
        "parameters": {k: p.model_dump() for k, p in app.spec.parameters.items()},
        "transfers": {k: t.model_dump() for k, t in app.spec.transfers.items()},
        "environment_variables": dict(app.spec.environment),
        "cleanup_files": list(app.spec.cleanup_files),
        "description": app.spec.description,
        "__module__": __name__,
    }
    if app.spec.preamble:
        attrs["shell_preamble"] = app.spec.preamble
    return type(app.name, (ApplicationDefinition,), attrs)


def load_app_class(ref: dict[str, Any]) -> type[ApplicationDefinition]:
    """The class an App's ``python:`` names: imported by module path, else unpickled."""
    module, qualname, payload = ref.get("module"), ref.get("class") or ref.get("className"), ref.get("payload")
    err: Exception | None = None
    if module:
        try:
            obj: Any = importlib.import_module(module)
            for part in str(qualname).split("."):
                obj = getattr(obj, part)
            return obj  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as e:
            err = e
    if payload:
        return b64unpickle(payload)  # type: ignore[no-any-return]
    raise ImportError(f"cannot load app class {module}.{qualname}: {err}")
