"""``balsamctl label`` and ``balsamctl annotate``: kubectl's verbs for metadata.

``KIND NAME... KEY=VALUE... KEY-...`` (or ``KIND/NAME``, or ``-l`` / ``--field-selector`` /
``--all`` instead of names). ``KEY=VALUE`` adds a key; changing the value of a key that is there
needs ``--overwrite`` (else nothing is written and the key is named); ``KEY-`` removes one.
Every object is changed in one CAS write (``bulk.update_all``): a refusal writes nothing, a
concurrent change is read again rather than overwritten. Prints ``job.balsam.io/NAME labeled``
(``unlabeled`` when only removals, ``not labeled`` when nothing changed), as kubectl does.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from apis import Resource
from apis._meta import validate_label_key, validate_label_value

from .._context import common_options, get_ctx
from .._errors import CLIError
from ..bulk import select, update_all
from ..completion import complete_field_selector, complete_label_keys, complete_targets
from ..fieldselector import parse_field_selector
from ..printers import object_ref
from ..query import Filters
from ._shared import DRY_RUN, dry_run_suffix
from .get import resolve_targets


@dataclass(frozen=True)
class Edits:
    """What the arguments ask: keys to set and keys to remove."""

    set: dict[str, str]
    remove: tuple[str, ...]


@dataclass(frozen=True)
class Verb:
    name: str  # label | annotate
    field: str  # labels | annotations
    noun: str  # label | annotation
    done: str  # labeled | annotated
    undone: str  # unlabeled | annotated
    not_done: str  # not labeled | not annotated


LABEL = Verb("label", "labels", "label", "labeled", "unlabeled", "not labeled")
ANNOTATE = Verb("annotate", "annotations", "annotation", "annotated", "annotated", "not annotated")


def split_args(args: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """kubectl's rule: after the kind, arguments with ``=`` or a trailing ``-`` are edits, the rest names."""
    targets: list[str] = []
    edits: list[str] = []
    for i, a in enumerate(args):
        if i > 0 and ("=" in a or a.endswith("-")):
            edits.append(a)
        else:
            targets.append(a)
    return tuple(targets), edits


def parse_edits(verb: Verb, edits: list[str]) -> Edits:
    """``k=v`` / ``k-`` → Edits; keys (and label values) checked before anything is read."""
    if not edits:
        raise CLIError(f"at least one {verb.noun} update is required (KEY=VALUE or KEY-)")
    to_set: dict[str, str] = {}
    remove: list[str] = []
    for e in edits:
        key, sep, value = e.partition("=")
        if not sep:
            key = e[:-1]
        try:
            validate_label_key(key)
            if sep and verb is LABEL:
                validate_label_value(key, value)
        except ValueError as err:
            raise CLIError(f"invalid {verb.noun} spec: {e}: {err}") from None
        if key in to_set or key in remove:
            raise CLIError(f"{verb.noun} {key!r} is given more than once")
        if sep:
            to_set[key] = value
        else:
            remove.append(key)
    return Edits(to_set, tuple(remove))


class Changer:
    """The new object for one target (None: unchanged); refuses a changed value without --overwrite."""

    def __init__(self, verb: Verb, edits: Edits, overwrite: bool) -> None:
        self.verb, self.edits, self.overwrite = verb, edits, overwrite
        self.missing: list[tuple[str, str]] = []  # (object, key) removed but not there

    def __call__(self, obj: Resource) -> Resource | None:
        cur: dict[str, str] = getattr(obj.metadata, self.verb.field)
        new = dict(cur)
        for k, v in self.edits.set.items():
            if k in cur and cur[k] != v and not self.overwrite:
                raise CLIError(f"'{k}' already has a value ({cur[k]}) on {object_ref(obj)}, and --overwrite is false")
            new[k] = v
        for k in self.edits.remove:
            if k in new:
                del new[k]
            else:
                self.missing.append((object_ref(obj), k))
        if new == cur:
            return None
        out = obj.model_copy()
        out.metadata = obj.metadata.model_copy(update={self.verb.field: new})
        return out


def make_command(verb: Verb) -> click.Command:
    @click.command(verb.name)
    @click.argument("args", nargs=-1, metavar="KIND [NAME...] KEY=VALUE... KEY-...", shell_complete=complete_targets)
    @click.option("--overwrite", is_flag=True, help=f"Allow changing the value of an existing {verb.noun}.")
    @click.option("-l", "--selector", default=None, metavar="SELECTOR", shell_complete=complete_label_keys,
                  help="Change every object the label selector selects.")
    @click.option("--field-selector", default=None, metavar="SELECTOR", shell_complete=complete_field_selector,
                  help="Change every object the field selector selects (e.g. status.state=FAILED).")
    @click.option("--all", "all_", is_flag=True, help="Change every object of the kind in the namespace.")
    @DRY_RUN
    @common_options
    def command(args: tuple[str, ...], overwrite: bool, selector: str | None, field_selector: str | None,
                all_: bool, dry_run: str) -> None:
        targets, edit_args = split_args(args)
        kind, names = resolve_targets(targets)
        edits = parse_edits(verb, edit_args)
        filters = Filters.parse(selector, (), {}, None, None, fields=parse_field_selector(field_selector, kind))
        ctx = get_ctx()
        objs, missing = select(ctx, kind, names, filters, all_)
        if missing:  # kubectl stops at a missing name: nothing is changed
            raise missing[0]
        if not objs:
            click.echo(f"No resources found in {ctx.namespace} namespace.", err=True)
            return
        changer = Changer(verb, edits, overwrite)
        written = {(o.namespace, o.name) for o, _ in update_all(ctx.registry, kind, objs, changer, dry_run=dry_run)}
        for ref, key in dict.fromkeys(changer.missing):
            ctx.warn(f'{verb.noun} "{key}" not found on {ref}')
        suffix = dry_run_suffix(dry_run)
        only_removed = not edits.set
        for o in objs:
            if (o.namespace, o.name) in written:
                click.echo(f"{object_ref(o)} {verb.undone if only_removed else verb.done}{suffix}")
            else:
                click.echo(f"{object_ref(o)} {verb.not_done}{suffix}")

    command.help = f"""Add, change or remove {verb.field} of objects.

    KEY=VALUE adds a {verb.noun} (changing an existing value needs --overwrite); KEY- removes one.
    All the objects are changed in one write, or none is.

    \b
    balsamctl {verb.name} job my-job experiment=foo
    balsamctl {verb.name} jobs -l experiment=foo run=6 --overwrite
    balsamctl {verb.name} jobs --field-selector status.state=FAILED triage=todo
    balsamctl {verb.name} job/my-job experiment-
    """
    return command


command = make_command(LABEL)
