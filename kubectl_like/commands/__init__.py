"""One module per ``balsamctl`` command; each exposes ``command`` (a click command)."""
