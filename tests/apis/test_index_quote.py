"""Index values are percent-quoted exactly as ``urllib.parse.quote(value, safe="")`` writes them
(the keys already in a store were written that way; ``apis._registry.q`` takes a faster path)."""

from __future__ import annotations

import random
import string
from urllib.parse import quote

from apis._registry import q


def test_every_character_below_0x800_is_quoted_as_urllib_does() -> None:
    for c in range(0x800):
        assert q(chr(c)) == quote(chr(c), safe=""), hex(c)


def test_mixed_values_are_quoted_as_urllib_does() -> None:
    rng = random.Random(13)
    alphabet = string.printable + "é/=%→😀"
    for _ in range(20_000):
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert q(v) == quote(v, safe=""), v
    assert q("bench/7") == "bench%2F7" and q("run=5") == "run%3D5" and q("") == ""
