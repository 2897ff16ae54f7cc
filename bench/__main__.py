"""``python -m bench``: see bench/README.md."""

from __future__ import annotations

import sys

from ._harness import main

if __name__ == "__main__":
    sys.exit(main())
