"""Behaviour of the etcd backend that the shared conformance suite cannot see: unreachable
servers, server limits, failover between members, and where etcd's own semantics differ from
the contract.  Every test runs against real etcd processes started here (store/testing.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from store import Compacted, Compare, Conflict, Delete, Put, StoreError, Unavailable, WatchClosed, open_store
from store._etcd import EtcdStore
from store.testing import EtcdCluster, free_ports
from tests._deadline import DEADLINE


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    """One member with the limits scripts/etcd-up sets."""
    with EtcdCluster.start(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def etcd_default_limits() -> Iterator[EtcdCluster]:
    """One member with etcd's default limits: 128 ops per txn, 1.5 MiB per request."""
    with EtcdCluster.start(
        1, limits={"--max-txn-ops": "128", "--max-request-bytes": str(3 << 19)}
    ) as cluster:
        yield cluster


@pytest.fixture
def store(etcd: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd.url)
    yield s
    s.close()


def drain(watch, n: int, timeout: float = DEADLINE) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        events += watch.poll(0.2)
    return events


# --- unreachable servers ----------------------------------------------------------------------


def test_unavailable_at_once_when_nothing_listens() -> None:
    (port,) = free_ports(1)
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        open_store(f"etcd://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 2.0
    message = str(info.value)
    assert f"cannot reach etcd at 127.0.0.1:{port}" in message
    assert "\n" not in message


def test_unavailable_names_every_member_when_none_listens() -> None:
    ports = free_ports(3)
    url = "etcd://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match=",".join(f"127.0.0.1:{p}" for p in ports)):
        open_store(url)
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("url", ["etcd://", "etcd://host:notaport", "etcd://:2379", "etcd://h:99999"])
def test_malformed_url_is_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(Unavailable, match=r"expected etcd://HOST:PORT"):
        EtcdStore(url)


@pytest.mark.etcd
def test_single_member_is_usable_again_soon_after_it_restarts() -> None:
    # python3-etcd3 marks a member that failed once as unusable for 300 s; the store must not.
    with EtcdCluster.start(1) as cluster:
        store = EtcdStore(cluster.url)
        try:
            store.put("/restart/a", b"1")
            cluster.members[0].kill()
            with pytest.raises(Unavailable):
                store.get("/restart/a")
            cluster.members[0].restart()
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    kv = store.get("/restart/a")
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "store still unavailable long after the restart"
                    time.sleep(0.1)
            assert kv is not None and kv.value == b"1"
        finally:
            store.close()


@pytest.mark.etcd
def test_watch_resumes_without_gap_when_its_only_member_restarts_quickly() -> None:
    with EtcdCluster.start(1) as cluster:
        store = EtcdStore(cluster.url)
        try:
            watch = store.watch("/w/")
            store.put("/w/1", b"1")
            assert [e.kv.key for e in drain(watch, 1)] == ["/w/1"]
            cluster.members[0].kill()
            cluster.members[0].restart()
            # The first call after a restart may find the channel still reconnecting on a
            # loaded machine (a refused connection applied nothing): what is tested is the watch.
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    rev = store.put("/w/2", b"2")
                    break
                except Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            events = drain(watch, 1)
            assert [(e.kv.key, e.revision) for e in events] == [("/w/2", rev)]
        finally:
            store.close()


@pytest.mark.etcd
def test_watch_ends_as_closed_and_unavailable_when_its_member_stays_down() -> None:
    with EtcdCluster.start(1) as cluster:
        store = EtcdStore(cluster.url, timeout=1.0)
        try:
            watch = store.watch("/w/")
            cluster.members[0].kill()
            deadline = time.monotonic() + DEADLINE
            with pytest.raises(WatchClosed) as info:
                while time.monotonic() < deadline:
                    watch.poll(0.5)
            assert isinstance(info.value, Unavailable)
            assert cluster.members[0].endpoint in str(info.value)
        finally:
            store.close()


# --- server limits: a txn is never split --------------------------------------------------------


@pytest.mark.etcd
def test_txn_over_the_servers_op_limit_is_refused_whole(etcd_default_limits: EtcdCluster) -> None:
    store = EtcdStore(etcd_default_limits.url)
    try:
        with pytest.raises(StoreError, match="--max-txn-ops") as info:
            store.txn([], [Put(f"/limit/{i:04d}", b"v") for i in range(129)])
        assert not isinstance(info.value, Unavailable)
        assert store.count("/limit/") == 0
    finally:
        store.close()


@pytest.mark.etcd
def test_request_over_the_servers_byte_limit_is_refused_whole(etcd_default_limits: EtcdCluster) -> None:
    store = EtcdStore(etcd_default_limits.url)
    try:
        with pytest.raises(StoreError, match="--max-request-bytes"):
            store.txn([], [Put("/bytes/a", b"x" * 1000), Put("/bytes/b", b"x" * (2 << 20))])
        assert store.count("/bytes/") == 0
    finally:
        store.close()


@pytest.mark.etcd
def test_reads_are_chunked_to_fit_a_server_with_default_limits(etcd_default_limits: EtcdCluster) -> None:
    store = EtcdStore(etcd_default_limits.url)
    try:
        for start in range(0, 300, 100):
            store.txn([], [Put(f"/chunk/{i:04d}", b"%d" % i) for i in range(start, start + 100)])
        keys = [f"/chunk/{i:04d}" for i in range(300)] + ["/chunk/missing"]
        values = store.get_many(keys)
        assert [kv.value if kv else None for kv in values] == [b"%d" % i for i in range(300)] + [None]
        # intersect's point lookups (300 candidates, 700 keys under the other prefix) are chunked too
        for start in range(0, 700, 100):
            store.txn([], [Put(f"/chunkb/{i:04d}", b"") for i in range(start + 1, start + 101, 1)])
        assert store.intersect(["/chunk/", "/chunkb/"]) == [f"{i:04d}" for i in range(1, 300)]
        # 300 deletes in one revision (a lease revoke): their prev values are looked up in chunks.
        lease = store.lease_grant(60)
        watch = store.watch("/leased/")
        for start in range(0, 300, 100):
            store.txn(
                [], [Put(f"/leased/{i:04d}", b"%d" % i, lease=lease) for i in range(start, start + 100)]
            )
        store.lease_revoke(lease)
        events = [e for e in drain(watch, 600) if e.type == "DELETE"]
        assert len(events) == 300
        assert {e.kv.key: e.prev.value for e in events if e.prev} == {
            f"/leased/{i:04d}": b"%d" % i for i in range(300)
        }
    finally:
        store.close()


@pytest.mark.etcd
def test_txn_of_thousands_of_puts_is_one_revision(store: EtcdStore) -> None:
    result = store.txn([], [Put(f"/bulk/{i:05d}", b"v" * 100) for i in range(5000)])
    page = store.range("/bulk/", limit=10)
    assert page.count == 5000 and page.more
    assert {kv.mod_revision for kv in store.range("/bulk/").kvs} == {result.revision}
    store.txn([], [Delete(f"/bulk/{i:05d}") for i in range(5000)])


@pytest.mark.etcd
def test_txn_writing_one_key_twice_is_refused(store: EtcdStore) -> None:
    # etcd's rule, not the contract's: reported as a plain StoreError, nothing written.
    with pytest.raises(StoreError, match="same key twice"):
        store.txn([], [Put("/twice/a", b"1"), Put("/twice/a", b"2")])
    assert store.get("/twice/a") is None


@pytest.mark.etcd
def test_range_larger_than_grpcs_default_4mib_receive_limit(store: EtcdStore) -> None:
    store.txn([], [Put(f"/large/{i:04d}", b"x" * 4096) for i in range(1500)])  # 6 MiB
    result = store.range("/large/")
    assert len(result.kvs) == 1500 and not result.more
    store.txn([], [Delete(f"/large/{i:04d}") for i in range(1500)])


# --- etcd semantics the backend adjusts to the contract ---------------------------------------


@pytest.mark.etcd
def test_watch_from_exactly_the_compacted_revision_raises_compacted(store: EtcdStore) -> None:
    # etcd itself would replay from the compacted revision; the contract says it is gone.
    store.put("/compact/a", b"1")
    rev = store.put("/compact/a", b"2")
    store.compact(rev)
    with pytest.raises(Compacted) as info:
        store.watch("/compact/", start_revision=rev).poll(5)
    assert info.value.compact_revision == rev
    watch = store.watch("/compact/", start_revision=rev + 1)
    later = store.put("/compact/a", b"3")
    assert [e.revision for e in drain(watch, 1)] == [later]
    watch.close()


@pytest.mark.etcd
def test_lease_ttl_is_rounded_up_to_whole_seconds(store: EtcdStore) -> None:
    lease = store.lease_grant(1.2)
    assert store.lease_keepalive(lease) == 2.0
    store.lease_revoke(lease)


@pytest.mark.etcd
def test_paging_with_start_after_reads_every_key_once(store: EtcdStore) -> None:
    store.txn([], [Put(f"/page/{i:05d}", b"") for i in range(2500)])
    seen: list[str] = []
    after = None
    while True:
        page = store.range("/page/", limit=300, start_after=after, keys_only=True)
        seen += [kv.key for kv in page.kvs]
        if (after := page.continue_key) is None:
            break
    assert seen == [f"/page/{i:05d}" for i in range(2500)]
    assert store.count("/page/") == 2500
    store.txn([], [Delete(k) for k in seen])


# --- three members --------------------------------------------------------------------------


@pytest.fixture
def cluster3() -> Iterator[EtcdCluster]:
    with EtcdCluster.start(3) as cluster:
        yield cluster


@pytest.mark.slow
@pytest.mark.etcd
def test_three_members_killing_the_one_in_use_is_invisible(cluster3: EtcdCluster) -> None:
    store = EtcdStore(cluster3.url)
    try:
        # Use a follower, so that the kill does not also start an election.
        leader = cluster3.leader()
        follower = next(m for m in cluster3.members if m is not leader)
        store._client._current_endpoint_label = follower.endpoint  # the member the store uses
        watch = store.watch("/ha/")
        revs = [store.put(f"/ha/{i}", b"before") for i in range(5)]
        follower.kill()
        # No call fails: the one that meets the dead member moves to another, whether the
        # connection was refused or broke mid-call (a put is safe to send again, a CAS is
        # checked against what it would have left).
        revs += [store.put(f"/ha/{i}", b"after") for i in range(5, 8)]
        revs.append(store.put("/ha/8", b"after", expect_revision=0))
        revs.append(store.put("/ha/8", b"again", expect_revision=revs[-1]))
        revs.append(store.put("/ha/9", b"after", expect_revision=0))
        assert store.count("/ha/") == 10
        assert store.get("/ha/9").value == b"after"
        assert store.get("/ha/8").version == 2
        assert store.txn([Compare.absent("/ha/txn")], [Put("/ha/txn", b"t")]).succeeded
        revs.append(store.current_revision())
        # The watch followed too: every event once, in order.
        assert [e.revision for e in drain(watch, 12)] == revs
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.etcd
def test_three_members_survive_a_leader_crash(cluster3: EtcdCluster) -> None:
    store = EtcdStore(cluster3.url)
    try:
        watch = store.watch("/ha/")
        store.put("/ha/0", b"0")
        cluster3.leader().kill()
        # A write caught by the crash is sent again (on another member, once the one it waited
        # on gave up): no caller sees the crash, and no create is made twice.
        written = [store.put(f"/ha/{i}", b"%d" % i, expect_revision=0) for i in range(1, 21)]
        assert store.count("/ha/") == 21
        assert all(store.get(f"/ha/{i}").version == 1 for i in range(21))
        events = drain(watch, 21)
        assert [e.revision for e in events][-len(written) :] == written
    finally:
        store.close()


def test_intersect_reads_the_smallest_prefix_in_pages_at_one_revision(store: EtcdStore) -> None:
    a, b = "/t/intersect/a/", "/t/intersect/b/"
    store.txn([], [Put(a + f"k{i}", b"") for i in range(7)] + [Put(b + f"k{i}", b"") for i in range(0, 7, 2)])
    rev, keys = store._suffixes_under(a, page=2)
    assert keys == [f"k{i}" for i in range(7)]
    store.delete(b + "k2")
    assert store._suffixes_under(a, rev, page=3)[1] == keys
    assert store._present(b, keys, rev) == ["k0", "k2", "k4", "k6"]  # at the first page's revision
    assert store._present(b, keys, store.current_revision()) == ["k0", "k4", "k6"]
    assert store.intersect([b, a]) == ["k0", "k4", "k6"]


# --- a write whose outcome is unknown ------------------------------------------------------------


class _LostReply:
    """The KV stub, except that the next ``n`` txns are applied by etcd and then reported lost,
    as when the member's connection breaks after it applied the write (fault injection on a
    real server: the write really lands)."""

    def __init__(self, stub: object, n: int) -> None:
        self._stub, self.left = stub, n
        self.meanwhile: Callable[[], None] | None = None  # another writer, before the retry

    def __getattr__(self, name: str) -> object:
        return getattr(self._stub, name)

    def Txn(self, request, timeout, metadata=None):  # type: ignore[no-untyped-def]  # noqa: N802 - gRPC's name
        response = self._stub.Txn(request, timeout, metadata=metadata)
        if self.left and request.success and not request.success[0].HasField("request_range"):
            self.left -= 1
            if self.meanwhile is not None:
                self.meanwhile()
            raise _Unavailable()
        return response


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"


@pytest.fixture
def lossy(store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> _LostReply:
    client = store._client
    lost = _LostReply(client.kvstub, 1)
    monkeypatch.setattr(type(client), "kvstub", property(lambda self: lost))
    return lost


@pytest.mark.etcd
def test_a_create_that_landed_before_its_reply_was_lost_is_not_made_twice(store: EtcdStore, lossy: _LostReply) -> None:
    rev = store.put("/t/lost/a", b"v1", expect_revision=0)  # applied, reply lost, sent again: compare fails
    assert lossy.left == 0
    kv = store.get("/t/lost/a")
    assert kv.value == b"v1" and kv.version == 1 and kv.mod_revision == rev


@pytest.mark.etcd
def test_a_txn_that_landed_before_its_reply_was_lost_reports_success_once(store: EtcdStore, lossy: _LostReply) -> None:
    res = store.txn([Compare.absent("/t/lost/obj")], [Put("/t/lost/obj", b"{...}"), Put("/t/lost/idx/obj", b"")])
    assert lossy.left == 0
    assert res.succeeded
    assert {store.get(k).mod_revision for k in ("/t/lost/obj", "/t/lost/idx/obj")} == {res.revision}
    assert store.get("/t/lost/obj").version == 1


def _other_writer(store: EtcdStore, key: str, value: bytes) -> Callable[[], None]:
    """Another client that reads ``key`` and moves it on with a compare-and-swap."""
    def write() -> None:
        other = EtcdStore(store.url)
        try:
            kv = other.get(key)
            assert kv is not None
            other.put(key, value, expect_revision=kv.mod_revision)
        finally:
            other.close()
    return write


@pytest.mark.etcd
def test_a_cas_update_that_landed_is_not_reported_a_conflict_after_another_writer_moved_on(
        store: EtcdStore, lossy: _LostReply) -> None:
    # Four threads incrementing one counter ended at 401 of 400 under load: the first attempt
    # landed, its reply was lost, another thread read our value and wrote its own, and our
    # retry, judging by the key's present value, said Conflict: the caller incremented twice.
    before = store.put("/t/lost/n", b"100")
    lossy.meanwhile = _other_writer(store, "/t/lost/n", b"102")
    rev = store.put("/t/lost/n", b"101", expect_revision=before)
    assert lossy.left == 0 and rev > before
    kv = store.get("/t/lost/n")
    assert kv is not None and kv.value == b"102" and kv.version == 3  # 100, ours, theirs: nobody wrote twice


@pytest.mark.etcd
def test_a_txn_update_that_landed_is_reported_once_after_another_writer_moved_on(
        store: EtcdStore, lossy: _LostReply) -> None:
    before = store.put("/t/lost/o", b"v1")
    lossy.meanwhile = _other_writer(store, "/t/lost/o", b"v3")
    res = store.txn([Compare.mod("/t/lost/o", "==", before)], [Put("/t/lost/o", b"v2"), Put("/t/lost/o-idx", b"")])
    assert lossy.left == 0 and res.succeeded
    assert store.get("/t/lost/o-idx").mod_revision == res.revision  # type: ignore[union-attr]


@pytest.mark.etcd
def test_whether_a_write_landed_is_judged_by_the_first_change_after_its_compare(store: EtcdStore) -> None:
    # Judged by the key's history: the first change after the compared revision was another
    # writer's, so a first attempt of ours cannot have landed — even though the key now holds
    # the very value we would have written.
    before = store.put("/t/lost/m", b"a")
    _other_writer(store, "/t/lost/m", b"b")()
    _other_writer(store, "/t/lost/m", b"z")()
    assert store._landed([(b"/t/lost/m", b"z")], [], since={b"/t/lost/m": before}) is None
    assert store._landed([(b"/t/lost/m", b"b")], [], since={b"/t/lost/m": before}) is not None


@pytest.mark.etcd
def test_a_lost_reply_does_not_hide_a_real_conflict(store: EtcdStore, lossy: _LostReply) -> None:
    other = EtcdStore(store.url)
    try:
        other.put("/t/lost/c", b"theirs")
    finally:
        other.close()
    lossy.left = 0  # this put is refused (the key exists): no reply is lost
    with pytest.raises(Conflict):
        store.put("/t/lost/c", b"mine", expect_revision=0)
    assert store.get("/t/lost/c").value == b"theirs"


class _TimedOutOnce:
    """The KV stub, except that the next read txn fails as a member answers while the cluster
    changes leader: status UNKNOWN, "context deadline exceeded" (seen when the Raft leader was
    killed mid-run: a node agent crashed on it)."""

    def __init__(self, stub: object) -> None:
        self._stub, self.left = stub, 1

    def __getattr__(self, name: str) -> object:
        return getattr(self._stub, name)

    def Txn(self, request, timeout, metadata=None):  # type: ignore[no-untyped-def]  # noqa: N802 - gRPC's name
        if self.left:
            self.left -= 1
            raise _ServerTimedOut()
        return self._stub.Txn(request, timeout, metadata=metadata)


class _ServerTimedOut(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNKNOWN

    def details(self) -> str:
        return "context deadline exceeded"


@pytest.mark.etcd
def test_a_server_side_timeout_during_a_leader_change_is_retried(store: EtcdStore,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("/t/elect/a", b"1")
    client = store._client
    flaky = _TimedOutOnce(client.kvstub)
    monkeypatch.setattr(type(client), "kvstub", property(lambda self: flaky))
    assert [kv.value if kv else None for kv in store.get_many(["/t/elect/a"])] == [b"1"]
    assert flaky.left == 0
