"""``balsamctl patch KIND NAME... -p PATCH [--type merge|json] [--dry-run=client|server]``.

* ``--type merge`` (the default; kubectl's only type besides json for custom resources): an
  RFC 7386 JSON merge patch, ``{"spec": {"priority": 5}}``; ``null`` removes a field.
* ``--type json``: an RFC 6902 JSON patch, ``[{"op": "replace", "path": "/spec/priority", "value": 5}]``
  (``add``, ``remove``, ``replace``, ``move``, ``copy``, ``test``).

The patch is applied to the object as ``get -o json`` shows it; the result is validated like a
manifest (unknown fields, bad values) and written with a CAS on the resourceVersion (a race is
read again and the patch applied again). apiVersion, kind, name and namespace may not change;
status and server metadata are the store's (changes to them are ignored, as through a
status subresource). A bad patch, or one that fails on any named object, writes nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import click
import jsonpatch
import jsonpointer
from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from apis import NotFound, Resource, describe_validation_error, parse_object

from .._context import common_options, get_ctx
from .._errors import CLIError, one_line
from ..bulk import update_all
from ..completion import complete_targets
from ..merge import apply_patch
from ..printers import PrintOptions, object_ref, printer_for
from ._shared import DRY_RUN, dry_run_suffix, warn_finished
from .get import resolve_targets

IDENTITY = (("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"))
SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp")


def parse_patch(text: str, patch_type: str) -> Any:
    """The patch as data: JSON, or YAML (kubectl accepts both); its shape checked for the type."""
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = YAML(typ="safe", pure=True).load(text)
        except YAMLError as e:
            raise CLIError(f"unable to parse the patch {one_line(text)[:80]!r}: {one_line(str(e))}") from None
    if patch_type == "merge":
        if not isinstance(data, dict):
            raise CLIError("a merge patch must be a JSON object, e.g. '{\"spec\": {\"priority\": 5}}'")
        return data
    if not isinstance(data, list) or not all(isinstance(op, dict) for op in data):
        raise CLIError("a json patch must be a list of operations, e.g. "
                       "'[{\"op\": \"replace\", \"path\": \"/spec/priority\", \"value\": 5}]'")
    for i, op in enumerate(data):
        if op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise CLIError(f"json patch operation {i}: unknown op {op.get('op')!r} "
                           "(add, remove, replace, move, copy, test)")
        if not isinstance(op.get("path"), str):
            raise CLIError(f"json patch operation {i}: 'path' is required (a JSON pointer such as /spec/priority)")
    return data


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    return cur


def patched(live: Resource, patch: Any, patch_type: str) -> Resource | None:
    """The object ``patch`` makes of ``live`` (None: no change); CLIError when it cannot apply."""
    doc = live.to_dict()
    if patch_type == "merge":
        out = apply_patch(doc, patch)
    else:
        try:
            out = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(doc))
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise CLIError(f"{object_ref(live)}: the json patch does not apply: {one_line(str(e))}") from None
    if not isinstance(out, dict):
        raise CLIError(f"{object_ref(live)}: the patch must leave an object")
    for path in IDENTITY:
        if _at(out, path) != _at(doc, path):
            raise CLIError(f"{object_ref(live)}: {'.'.join(path)} may not be changed by patch")
    clean = {k: v for k, v in out.items() if k != "status"}
    meta = clean.get("metadata")
    if isinstance(meta, dict):
        clean["metadata"] = {k: v for k, v in meta.items() if k not in SERVER_META}
    try:
        new = parse_object(clean, [type(live)])
    except ValidationError as e:
        raise CLIError(f'{live.resource_name()} "{live.name}" is invalid: {describe_validation_error(e)}') from None
    result = live.model_copy(update={"spec": new.spec} if "spec" in type(live).model_fields else {})  # type: ignore[attr-defined]
    keep = {k: getattr(live.metadata, k) for k in ("uid", "resource_version", "generation",
                                                   "creation_timestamp", "deletion_timestamp")}
    result.metadata = new.metadata.model_copy(update=keep)
    if getattr(result, "spec", None) == getattr(live, "spec", None) and result.metadata == live.metadata:
        return None
    return result


@click.command("patch")
@click.argument("args", nargs=-1, required=True, metavar="KIND NAME... | KIND/NAME...", shell_complete=complete_targets)
@click.option("-p", "--patch", "patch_text", default=None, metavar="PATCH", help="The patch, JSON or YAML.")
@click.option("--patch-file", default=None, metavar="FILE", help="A file holding the patch.")
@click.option("--type", "patch_type", type=click.Choice(["merge", "json"]), default="merge", show_default=True,
              help="merge: RFC 7386 JSON merge patch; json: RFC 6902 JSON patch.")
@DRY_RUN
@click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]), default=None, help="Print the patched objects.")
@common_options
def command(args: tuple[str, ...], patch_text: str | None, patch_file: str | None, patch_type: str, dry_run: str,
            output: str | None) -> None:
    """Change fields of live objects with a merge patch or a JSON patch.

    \b
    balsamctl patch job my-job -p '{"spec": {"priority": 10}}'
    balsamctl patch job my-job --type json -p '[{"op": "replace", "path": "/spec/resources/numNodes", "value": 2}]'
    balsamctl patch app hello -p '{"metadata": {"labels": {"tier": "gold"}}}' --dry-run=server
    """
    kind, names = resolve_targets(args)
    if not names:
        raise CLIError("one or more resources must be specified as <resource> <name> or <resource>/<name>")
    if (patch_text is None) == (patch_file is None):
        raise CLIError("must specify exactly one of --patch (-p) or --patch-file")
    if patch_file is not None:
        try:
            patch_text = Path(patch_file).read_text()
        except OSError as e:
            raise CLIError(f"{patch_file}: {e.strerror or e}") from None
    assert patch_text is not None
    if not patch_text.strip():
        raise CLIError("the patch is empty")
    patch = parse_patch(patch_text, patch_type)
    ctx = get_ctx()
    objs = [o for o in ctx.registry.get_many(kind, list(dict.fromkeys(names)), ctx.namespace) if o is not None]
    found = {o.name for o in objs}
    for n in names:
        if n not in found:
            raise NotFound(kind.resource_name(), n)
    pairs = update_all(ctx.registry, kind, objs, lambda o: patched(o, patch, patch_type), dry_run=dry_run)
    warn_finished(ctx, pairs)
    done = {(o.namespace, o.name): new for o, new in pairs}
    if output:
        shown = [done.get((o.namespace, o.name), o) for o in objs]
        click.echo(printer_for(output, kind, PrintOptions()).render(shown, single=len(shown) == 1), nl=False)
        return
    suffix = dry_run_suffix(dry_run)
    for o in objs:
        change = "patched" if (o.namespace, o.name) in done else "patched (no change)"
        click.echo(f"{object_ref(o)} {change}{suffix}")
