"""Transfer locations as a Site declares them (``spec.transferLocations``): pure checks of the
model, used by the Site kind's validation and by the transfer planning of ``apis._transfers``."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SCHEMES = ("globus", "file", "http", "https")


def provider_of(location: str) -> str:
    """``globus`` | ``file`` | ``http`` (for http and https) from a location URL."""
    scheme = location.partition("://")[0].lower()
    return "http" if scheme == "https" else scheme


def check_location(alias: str, url: str) -> None:
    """A Site's ``transferLocations`` entry: ValueError naming what is wrong."""
    where = f'spec.transferLocations.{alias}: Invalid value: "{url}"'
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"{where}: expected globus://<endpoint-uuid>, file:// or https://host")
    scheme = scheme.lower()
    if scheme == "globus" and not _UUID.match(rest.rstrip("/")):
        raise ValueError(f"{where}: a Globus location is globus://<endpoint-uuid>")
    if scheme in ("http", "https") and not urlsplit(url).hostname:
        raise ValueError(f"{where}: an HTTP location needs a host (https://host[:port][/base])")
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or parts.path not in ("", "/"):
            raise ValueError(f"{where}: a local location is file:// (optionally file://?hardlink=true)")


