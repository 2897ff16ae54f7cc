"""``balsamctl annotate``: ``label``'s verb for annotations (``commands/label.py``)."""

from __future__ import annotations

from .label import ANNOTATE, make_command

command = make_command(ANNOTATE)
