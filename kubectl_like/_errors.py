"""Every failure becomes ONE line on stderr in kubectl's form:

* ``Error from server (NotFound): jobs.balsam.io "x" not found`` for what the API refused;
* ``error: ...`` for what the client refused (bad flags, bad files, no site, no store).
"""

from __future__ import annotations

import re

import click

import store as st


class CLIError(click.ClickException):
    """A client-side refusal: printed as ``error: <message>``, exit 1."""

    exit_code = 1


def one_line(text: str) -> str:
    """Multi-line messages (YAML marks, pydantic) folded into one line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return re.sub(r"\s+", " ", "; ".join(lines)) if lines else ""


def render_error(err: BaseException) -> str:
    # imported when an error is shown, not at start-up (``balsamctl --version`` needs no API)
    from pydantic import ValidationError

    from apis import ApiError, describe_validation_error

    if isinstance(err, ApiError):
        msg = one_line(str(err))
        if err.from_server:
            return f"Error from server ({err.reason}): {msg}"
        return f"error: {msg}"
    if isinstance(err, click.ClickException):
        return f"error: {one_line(err.format_message())}"
    if isinstance(err, st.Forbidden):  # raised below the registry (a watch): the server refused it
        return f"Error from server (Forbidden): {one_line(str(err))}"
    if isinstance(err, st.StoreError):
        return f"error: {one_line(str(err))}"
    if isinstance(err, ValidationError):
        return f"error: {one_line(describe_validation_error(err))}"
    if isinstance(err, FileNotFoundError):
        return f'error: the path "{err.filename}" does not exist'
    if isinstance(err, OSError) and err.filename:
        return f"error: {err.filename}: {err.strerror or err}"
    return f"error: {type(err).__name__}: {one_line(str(err))}"
