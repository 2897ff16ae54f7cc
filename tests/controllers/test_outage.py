"""An etcd that dies and comes back (same data, same port) stops neither an informer nor a
leading controller manager: they log one line, wait it out, and carry on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

import store as st
from apis import App, Job, Registry
from controllers import ControllerManager, Informer
from store.testing import EtcdCluster, etcd_available
from tests._deadline import DEADLINE

from .conftest import make_job

pytestmark = pytest.mark.etcd


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("no etcd binary")
    with EtcdCluster.start(members=1) as c:
        yield c


def _until(fn: object, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not fn():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _write(reg: Registry, obj: Job) -> bool:
    try:
        reg.create(obj)
        return True
    except Exception:  # noqa: BLE001 - the store is still coming back: try again
        return False


def test_informer_and_leader_ride_through_etcd_down_and_back(cluster: EtcdCluster,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    reg = Registry(st.open_store(cluster.url))
    try:
        reg.create(App(metadata={"name": "hello"}, spec={"command": "echo hi"}))  # type: ignore[arg-type]
        reg.create(make_job("before"))
        inf = Informer(reg, Job)
        inf.start()
        mgr = ControllerManager(reg, identity="m1", lease_ttl=3, reconcilers=[])
        stop = threading.Event()
        rc: list[int] = []
        t = threading.Thread(target=lambda: rc.append(mgr.run(stop)), daemon=True)
        t.start()
        try:
            assert mgr.leading.wait(DEADLINE)
            cluster.members[0].kill()
            _until(lambda: "store unavailable" in caplog.text)  # someone noticed: a positive signal
            _until(lambda: not mgr.leading.is_set())  # the leader stepped down instead of exiting
            assert t.is_alive() and rc == []
            cluster.members[0].restart()
            _until(lambda: _write(reg, make_job("after")))
            _until(lambda: inf.get("after") is not None)  # the informer relisted/rewatched
            assert inf._thread is not None and inf._thread.is_alive()
            _until(lambda: mgr.leading.is_set())  # and the manager leads again
            assert mgr.terms >= 2
        finally:
            stop.set()
            t.join(DEADLINE)
            inf.stop()
        assert rc == [0]
        assert "Traceback" not in caplog.text
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    finally:
        reg.store.close()
