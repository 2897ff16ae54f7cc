"""Errors of the API layer, in one readable hierarchy.

Each carries what kubectl would print: ``kubectl_like`` renders them as
``Error from server (Reason): ...`` or ``error: ...`` on one line.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every API error. ``reason`` is Kubernetes' CamelCase status reason."""

    reason = "InternalError"

    @property
    def from_server(self) -> bool:
        """True when kubectl would say ``Error from server (...)``."""
        return True


class NotFound(ApiError):
    reason = "NotFound"

    def __init__(self, resource: str, name: str) -> None:
        self.resource = resource  # e.g. "jobs.balsam.io"
        self.name = name
        super().__init__(f'{resource} "{name}" not found')


class AlreadyExists(ApiError):
    reason = "AlreadyExists"

    def __init__(self, resource: str, name: str) -> None:
        self.resource = resource
        self.name = name
        super().__init__(f'{resource} "{name}" already exists')


class Conflict(ApiError):
    """An update carried a stale resourceVersion (HTTP 409)."""

    reason = "Conflict"

    def __init__(self, resource: str, name: str, detail: str = "") -> None:
        self.resource = resource
        self.name = name
        msg = (
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
        super().__init__(msg + (f" ({detail})" if detail else ""))


class Invalid(ApiError):
    """The object fails validation (HTTP 422)."""

    reason = "Invalid"


class BadRequest(ApiError):
    """The request itself is malformed: a selector, a filter, a flag."""

    reason = "BadRequest"

    @property
    def from_server(self) -> bool:
        return False


class IllegalTransition(Invalid):
    def __init__(self, current: str, to: str) -> None:
        self.current = current
        self.to = to
        super().__init__(f"illegal state transition {current} -> {to}")


class Forbidden(ApiError):
    """The store's access control refused the request (an etcd role without that key, HTTP 403)."""

    reason = "Forbidden"


class StoreUnavailable(ApiError):
    reason = "ServiceUnavailable"

    @property
    def from_server(self) -> bool:
        return False


class SiteNotFound(ApiError):
    """No site directory could be found (no --site, BALSAM_SITE_PATH, or settings in cwd)."""

    reason = "SiteNotFound"

    @property
    def from_server(self) -> bool:
        return False


class DoesNotExist(ApiError):
    """``Kind.objects.get(...)`` matched nothing (Django's and Balsam's name)."""

    reason = "NotFound"


class MultipleObjectsReturned(ApiError):
    """``Kind.objects.get(...)`` matched more than one object."""

    reason = "Conflict"
