"""``balsamctl edit KIND NAME``: change a live object in ``$EDITOR``, kubectl's way.

The object is written to a temporary YAML file and the editor opened on it (``BALSAM_EDITOR``,
else ``KUBE_EDITOR``, else ``EDITOR``, else ``vi``; split like a shell command line, so
``EDITOR="code --wait"`` works). On save:

* comment lines are dropped; an empty file or an unchanged object cancels the edit;
* apiVersion, kind, name and namespace may not change; status and server metadata
  (uid, resourceVersion, ...) are ignored, as with a status subresource;
* the result is written with a CAS on the resourceVersion that was shown, so an edit never
  overwrites a change made meanwhile (Conflict: nothing written, the copy is kept);
* an invalid edit (schema, admission, a resource edit of a RUNNING job) reopens the editor
  with the error on top; saving the same text again gives up. Whenever nothing was written,
  the edited text is kept in a file whose path the error names.

The last-applied annotation is left as it was, so the next ``apply`` of the files in git
puts back the fields git owns (drift correction) and keeps the others.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import click

from apis import ApiError, Conflict, Invalid, Resource, kind_for, parse_object

from .. import applier
from .._context import common_options, get_ctx
from .._errors import CLIError, one_line, render_error
from ..completion import complete_targets
from ..manifests import ManifestError, load_documents
from ..printers import dump_yaml, object_ref
from ._shared import warn_finished

HEADER = (
    "# Please edit the object below. Lines beginning with a '#' will be ignored,\n"
    "# and an empty file will abort the edit. If an error occurs while saving this file will be\n"
    "# reopened with the relevant failures.\n"
    "#\n"
)
MAX_ATTEMPTS = 10


def editor_argv() -> list[str]:
    for var in ("BALSAM_EDITOR", "KUBE_EDITOR", "EDITOR"):
        value = os.environ.get(var, "").strip()
        if value:
            return shlex.split(value)
    return ["vi"]


def strip_comments(text: str) -> str:
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.lstrip().startswith("#"))


def run_editor(path: Path) -> None:
    argv = editor_argv()
    try:
        rc = subprocess.call([*argv, str(path)])
    except OSError as e:
        raise CLIError(f'there was a problem with the editor "{" ".join(argv)}": {e.strerror or e}') from None
    if rc != 0:
        raise CLIError(f'there was a problem with the editor "{" ".join(argv)}": it exited with status {rc}')


def parse_edit(path: Path, live: Resource) -> Resource:
    """The edited file → the object to write over ``live`` (Invalid / ManifestError)."""
    docs = load_documents([str(path)])
    if len(docs) != 1 or docs[0].item is not None:
        raise Invalid(f"expected exactly one object in the edited file, found {len(docs)}")
    data = docs[0].data
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    changed = [f for f, was, now in (
        ("apiVersion", live.api_version, data.get("apiVersion")),
        ("kind", live.KIND, data.get("kind")),
        ("metadata.name", live.name, meta.get("name")),
        ("metadata.namespace", live.namespace, meta.get("namespace", live.namespace)),
    ) if was != now]
    if changed:
        raise Invalid(f"{', '.join(changed)} may not be changed by edit (create a new object instead)")
    edited = parse_object(applier._clean(data), [type(live)])
    out = live.model_copy(update={"spec": getattr(edited, "spec", None)} if "spec" in type(live).model_fields
                          else {})
    keep = {k: getattr(live.metadata, k) for k in ("uid", "resource_version", "generation",
                                                   "creation_timestamp", "deletion_timestamp")}
    out.metadata = edited.metadata.model_copy(update=keep)
    return out


def same_object(a: Resource, b: Resource) -> bool:
    return getattr(a, "spec", None) == getattr(b, "spec", None) and a.metadata == b.metadata


def keep_copy(text: str) -> str:
    fd, name = tempfile.mkstemp(prefix="balsamctl-edit-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return name


def give_up(err: ApiError | ManifestError, text: str) -> Exception:
    """The last error of an edit that wrote nothing, naming where the edited text was kept."""
    note = f' (a copy of your changes has been stored to "{keep_copy(text)}")'
    if isinstance(err, ApiError):
        return applier.LocatedError(err, "", note)
    return ManifestError(err.where, err.detail + note)


@click.command("edit")
@click.argument("args", nargs=-1, required=True, metavar="KIND NAME | KIND/NAME", shell_complete=complete_targets)
@common_options
def command(args: tuple[str, ...]) -> None:
    """Edit a live object in $EDITOR and save it with a CAS on its resourceVersion.

    \b
    EDITOR=nano balsamctl edit job my-job
    balsamctl edit app/hello
    """
    if len(args) == 1 and "/" in args[0]:
        kind_name, _, name = args[0].partition("/")
    elif len(args) == 2:
        kind_name, name = args
    else:
        raise click.UsageError("expected KIND NAME or KIND/NAME (one object)")
    kind = kind_for(kind_name)
    ctx = get_ctx()
    reg = ctx.registry
    live = reg.get(kind, name, ctx.namespace)
    original = dump_yaml(live.to_dict())
    fd, tmp = tempfile.mkstemp(prefix="balsamctl-edit-", suffix=".yaml")
    os.close(fd)
    path = Path(tmp)
    error: str | None = None
    last: ApiError | ManifestError | None = None
    previous: str | None = None
    text = original
    try:
        for _ in range(MAX_ATTEMPTS):
            head = HEADER if error is None else HEADER + "".join(f"# {ln}\n" for ln in error.splitlines()) + "#\n"
            path.write_text(head + text)
            run_editor(path)
            text = strip_comments(path.read_text())
            if not text.strip() or text == original:
                click.echo("Edit cancelled, no changes made.")
                return
            if text == previous and last is not None:  # saved again unchanged after an error: give up
                raise give_up(last, text)
            previous = text
            try:
                path.write_text(text)
                desired = parse_edit(path, live)
                if same_object(desired, live):
                    click.echo("Edit cancelled, no changes made.")
                    return
                _, updated = reg.write(updates=[(live, desired)])
            except Conflict as e:
                raise Conflict(kind.resource_name(), name,
                               f'a copy of your changes has been stored to "{keep_copy(text)}"') from e
            except (ApiError, ManifestError) as e:
                error, last = one_line(render_error(e)), e
                continue
            warn_finished(ctx, [(live, updated[0])])
            click.echo(f"{object_ref(updated[0])} edited")
            return
        assert last is not None
        raise give_up(last, text)
    finally:
        path.unlink(missing_ok=True)
