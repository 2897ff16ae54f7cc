"""``python -m nodeagent ...``: see :func:`nodeagent.main`."""

import sys

from nodeagent import main

sys.exit(main())
