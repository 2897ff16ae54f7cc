"""Reading manifests: files, directories (``-R``) and stdin, as multi-document YAML.

Safety first, before anything is parsed into objects:

* a file over ``MAX_MANIFEST_BYTES`` is refused from its size alone (never read);
* YAML is loaded with ruamel's *safe* loader (no Python tags), and a document that uses
  anchors/aliases is refused: aliases are how "billion laughs" bombs grow, and nothing
  in a resource needs them. The check walks the loaded graph once, stopping at the first
  container seen twice, so a bomb is refused in microseconds without being expanded.

Every document keeps where it came from (file, 1-based document position, item of a
``kind: List``), so an error can name it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ._errors import CLIError, one_line

MAX_MANIFEST_BYTES = int(os.environ.get("BALSAM_MAX_MANIFEST_BYTES", str(8 << 20)))
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class ManifestError(CLIError):
    """A manifest that cannot be read or parsed; ``where`` names the file and document."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.detail = message
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Document:
    source: str  # the path as the user wrote it (or "STDIN")
    index: int  # 1-based position of the document in its file
    data: dict[str, Any]
    item: int | None = None  # 1-based position in a ``kind: List``'s items

    @property
    def where(self) -> str:
        w = f"{self.source}: document {self.index}"
        return w if self.item is None else f"{w}, item {self.item}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def manifest_files(paths: Sequence[str], recursive: bool = False) -> list[str]:
    """The files that ``-f`` names, in a stable order: a directory gives its manifest files
    (sorted; with ``-R`` its subdirectories' too), a file itself, ``-`` stdin."""
    out: list[str] = []
    for p in paths:
        if p == STDIN:
            out.append(STDIN)
            continue
        path = Path(p)
        if path.is_dir():
            it = sorted(path.rglob("*") if recursive else path.iterdir())
            out.extend(str(f) for f in it if f.is_file() and f.suffix.lower() in MANIFEST_SUFFIXES)
        elif path.exists():
            out.append(p)
        else:
            raise CLIError(f'the path "{p}" does not exist')
    return out


def _read_capped(source: str, stdin: TextIO | None) -> str:
    if source == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        text = stream.read(MAX_MANIFEST_BYTES + 1)
        if len(text.encode()) > MAX_MANIFEST_BYTES:
            raise ManifestError("STDIN", f"more than {_mib(MAX_MANIFEST_BYTES)} of manifests; split them "
                                "into several files")
        return text
    size = os.path.getsize(source)
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(source, f"file is {_mib(size)}, over the {_mib(MAX_MANIFEST_BYTES)} limit for one "
                            "manifest file (split it, or create jobs in bulk with the Python client)")
    with open(source, encoding="utf-8") as f:
        try:
            return f.read()
        except UnicodeDecodeError as e:
            raise ManifestError(source, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _shares_containers(root: Any) -> bool:
    """True when some dict/list is reachable twice: only YAML aliases make that happen."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        cur = stack.pop()
        if isinstance(cur, (dict, list)):
            if id(cur) in seen:
                return True
            seen.add(id(cur))
            stack.extend(cur.values() if isinstance(cur, dict) else cur)
    return False


def _yaml_error(e: YAMLError) -> str:
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if mark is not None:
            return one_line(f"invalid YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}")
        return one_line(f"invalid YAML: {problem}")
    return one_line(f"invalid YAML: {e}")


def _yaml_docs(text: str, source: str) -> Iterator[tuple[int, Any]]:
    y = YAML(typ="safe")  # libyaml (ruamel.yaml.clib) when installed: ~5x faster
    y.allow_duplicate_keys = False
    index = 0
    try:
        for index, data in enumerate(y.load_all(io.StringIO(text)), start=1):  # noqa: B007
            yield index, data
    except YAMLError as e:
        raise ManifestError(f"{source}: document {index + 1}", _yaml_error(e)) from None
    except RecursionError:
        raise ManifestError(f"{source}: document {index + 1}", "YAML nested too deeply") from None


def load_documents(paths: Sequence[str], recursive: bool = False, stdin: TextIO | None = None) -> list[Document]:
    """Every document of every file ``paths`` names, checked to be a mapping with a kind;
    ``kind: List`` documents are expanded into their items. Raises ManifestError."""
    docs: list[Document] = []
    for source in manifest_files(paths, recursive):
        shown = "STDIN" if source == STDIN else source
        text = _read_capped(source, stdin)
        for index, data in _yaml_docs(text, shown):
            if data is None:  # an empty document ("---" at the end)
                continue
            where = f"{shown}: document {index}"
            if _shares_containers(data):
                raise ManifestError(where, "YAML anchors and aliases (&x / *x) are not allowed in manifests")
            if not isinstance(data, dict):
                raise ManifestError(where, f"expected an object with apiVersion, kind and metadata, got a "
                                    f"{type(data).__name__}")
            if data.get("kind") == "List" and "items" in data:
                items = data.get("items") or []
                if not isinstance(items, list):
                    raise ManifestError(where, "items: expected a list")
                for i, item in enumerate(items, start=1):
                    if not isinstance(item, dict):
                        raise ManifestError(f"{where}, item {i}", "expected an object")
                    docs.append(Document(shown, index, item, i))
                continue
            docs.append(Document(shown, index, data))
    return docs
