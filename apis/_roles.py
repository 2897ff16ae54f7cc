"""etcd roles for sites sharing one store (docs/design.md, "Sites on a shared etcd"): the key
prefixes a site's controllers and agents, a submitting user, and a read-only dashboard may touch.
A site is a namespace, so each role is a list of prefix permissions under it."""

from __future__ import annotations

from collections.abc import Iterable

from ._kinds import ALL_KINDS
from ._windows import window_prefix

#: The secondary indexes a site writes (apis/_registry.py ``index_entries``); a role grants
#: each one under the site's namespace.
SITE_INDEXES = ("label", "state", "app", "parent", "node", "boundnode", "batchjob", "workdir", "site", "claimable")
#: Read by every client for the store's current revision (store/_etcd.py ``REVISION_KEY``).
REVISION_KEY = "/revision"
LEASES = "/leases/"

Permission = tuple[str, str]  # ("read" | "write" | "readwrite", key prefix; a trailing "\0": one key)


def site_permissions(namespace: str) -> list[Permission]:
    """What a site's controller manager and node agents may touch: every kind and index of its
    own namespace, its leader lease, and (read) every Site, so that jobs naming another site
    can be told apart."""
    perms: list[Permission] = [("read", REVISION_KEY + "\0"), ("read", "/registry/sites/")]
    for plural in (k.PLURAL for k in ALL_KINDS):  # Events too: the site's controllers record them
        perms.append(("readwrite", f"/registry/{plural}/{namespace}/"))
        perms.append(("read", f"/index/{plural}/@schema\0"))  # whether the indexes are complete
        perms += [("readwrite", f"/index/{plural}/{index}/{namespace}/") for index in SITE_INDEXES]
    perms.append(("readwrite", f"{LEASES}controller-manager/{namespace}\0"))
    perms.append(("readwrite", window_prefix(namespace)))  # placement's claim windows
    return perms


def user_permissions(namespaces: Iterable[str]) -> list[Permission]:
    """A submitting user: create, read (and watch) jobs of the sites it may use; read their
    Apps; read every Site (to find a site by name)."""
    perms: list[Permission] = [("read", REVISION_KEY + "\0"), ("read", "/registry/sites/")]
    perms.append(("read", "/index/jobs/@schema\0"))  # whether the job indexes are complete
    for ns in namespaces:
        perms.append(("readwrite", f"/registry/jobs/{ns}/"))
        perms += [("readwrite", f"/index/jobs/{index}/{ns}/") for index in SITE_INDEXES]
        perms.append(("read", f"/registry/apps/{ns}/"))
        perms.append(("read", f"/registry/events/{ns}/"))  # describe lists a job's Events
        perms.append(("read", window_prefix(ns)))  # describe counts the nodes taking jobs themselves
    return perms


def dashboard_permissions() -> list[Permission]:
    """Read everything, write nothing."""
    return [("read", REVISION_KEY + "\0"), ("read", "/registry/"), ("read", "/index/"), ("read", LEASES)]
