"""Fixtures shared by every suite: real services, started once per session, and a site
directory on a SQLite store (suites with sites of their own override ``site``/``registry``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from apis import Registry
from apis._config import SiteConfig
from store.testing import ETCD_BIN, ETCD_DEFAULT_LIMITS, EtcdCluster, etcd_available
from tests._deadline import DEADLINE
from tests._support import make_site_config, registry_on, skip_or_fail

# A suite started in the background by a non-interactive shell (`nohup ./scripts/test &`, a CI
# runner's job) inherits SIGINT ignored, and so would every balsamctl it starts: Python installs
# no Ctrl-C handler then, and the tests that press Ctrl-C on `get -w` or `up` waited out their
# deadlines. A handled signal is reset to the default at exec: the children get Ctrl-C back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """A single-member etcd on 127.0.0.1 (free ports, data on /dev/shm, the limits the
    etcd backend needs), as ``etcd://127.0.0.1:PORT``; stopped at the end of the session.
    Skipped when etcd is not installed, except under CI, where that fails."""
    if not etcd_available():
        skip_or_fail(f"etcd is not installed ({ETCD_BIN} missing; apt-get install etcd-server)")
    try:
        cluster = EtcdCluster.start(members=1, timeout=DEADLINE)
    except RuntimeError as e:
        pytest.fail(f"etcd did not start: {e}", pytrace=False)
    with cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def etcd_defaults_url() -> Iterator[str]:
    """A single-member etcd started with etcd's own limits (``--max-txn-ops 128``,
    ``--max-request-bytes`` 1.5 MiB), as an etcd run by someone else would be."""
    if not etcd_available():
        skip_or_fail(f"etcd is not installed ({ETCD_BIN} missing; apt-get install etcd-server)")
    try:
        cluster = EtcdCluster.start(members=1, timeout=DEADLINE, limits=ETCD_DEFAULT_LIMITS)
    except RuntimeError as e:
        pytest.fail(f"etcd did not start: {e}", pytrace=False)
    with cluster:
        yield cluster.url


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    """A site directory (settings.yml, data/) with a SQLite store in it."""
    return make_site_config(tmp_path)


@pytest.fixture
def registry(site: SiteConfig) -> Iterator[Registry]:
    with registry_on(site.store_url) as reg:
        yield reg
