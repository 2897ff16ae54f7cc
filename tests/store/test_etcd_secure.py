"""The etcd backend over TLS with client certificates and etcd's auth (users, roles): a
3-member cluster on loopback made by store/testing.py (openssl certificates)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Forbidden, Unavailable, open_store
from store._etcd import EtcdStore
from store.testing import EtcdCluster
from tests._deadline import DEADLINE

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def secure() -> Iterator[EtcdCluster]:
    with EtcdCluster.start(3, auth=True, timeout=DEADLINE) as cluster:
        admin = EtcdStore(cluster.url)
        try:
            admin.ensure_role("team-a", [("readwrite", "/a/"), ("read", "/revision\0")])
            admin.ensure_user("alice", roles=["team-a"])  # signs in by certificate (CN=alice)
            admin.ensure_user("bob", password="bob-secret-pw", roles=["team-a"])
        finally:
            admin.close()
        yield cluster


def test_private_keys_are_private(secure: EtcdCluster) -> None:
    assert secure.certs is not None
    keys = list(secure.certs.root.glob("*.key"))
    assert len(keys) >= 3
    assert {stat.S_IMODE(k.stat().st_mode) for k in keys} == {0o600}
    assert stat.S_IMODE(secure.certs.root.stat().st_mode) == 0o700


def test_a_client_without_tls_cannot_reach_a_tls_cluster(secure: EtcdCluster) -> None:
    with pytest.raises(Unavailable):
        EtcdStore(secure.plain_url, timeout=2)


def test_a_certificate_names_its_etcd_user_and_role(secure: EtcdCluster) -> None:
    s = open_store(secure.url_for("alice"))
    try:
        s.put("/a/x", b"1")
        assert s.get("/a/x").value == b"1"
        with pytest.raises(Forbidden, match="permission denied"):
            s.put("/b/x", b"1")
        with pytest.raises(Forbidden):
            s.get("/b/x")
        with pytest.raises(Forbidden):
            s.watch("/b/")
        w = s.watch("/a/")
        rev = s.put("/a/y", b"2")
        assert [e.revision for e in w.poll(10)] == [rev]
        w.close()
    finally:
        s.close()


def test_a_certificate_whose_cn_is_no_user_is_refused(secure: EtcdCluster) -> None:
    with pytest.raises(Forbidden):  # opening reads the current revision: refused already
        open_store(secure.url_for("mallory"))


def test_password_comes_from_a_file_and_never_from_the_url(secure: EtcdCluster, tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="must not carry a password"):
        open_store(secure.url_for("mallory") + "&user=bob&password=bob-secret-pw")
    pw = tmp_path / "pw"
    pw.write_text("bob-secret-pw\n")
    s = open_store(secure.url_for("mallory") + f"&user=bob&password-file={pw}")
    try:
        s.put("/a/bob", b"1")
        assert "bob-secret-pw" not in repr(s) and "bob-secret-pw" not in repr(s._creds)
        with pytest.raises(Forbidden):
            s.put("/b/bob", b"1")
    finally:
        s.close()


def test_password_from_the_environment(secure: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALSAM_ETCD_USER", "bob")
    monkeypatch.setenv("BALSAM_ETCD_PASSWORD", "wrong")
    with pytest.raises(Forbidden, match="wrong user or password"):
        open_store(secure.url_for("mallory"))
    monkeypatch.setenv("BALSAM_ETCD_PASSWORD", "bob-secret-pw")
    s = open_store(secure.url_for("mallory"))
    s.close()


def test_an_expired_token_is_renewed(secure: EtcdCluster, tmp_path: Path) -> None:
    # python3-etcd3 never renews its token: every call failed after --auth-token-ttl. Here a
    # token etcd no longer knows stands for one that expired.
    pw = tmp_path / "pw"
    pw.write_text("bob-secret-pw")
    s = EtcdStore(secure.url_for("mallory") + f"&user=bob&password-file={pw}")
    try:
        w = s.watch("/a/")
        s._metadata = (("token", "expired.1"),)
        rev = s.put("/a/renewed", b"1")
        assert s.get("/a/renewed").mod_revision == rev
        assert s._metadata != (("token", "expired.1"),)
        assert rev in [e.revision for e in w.poll(10)]
        w.close()
    finally:
        s.close()


def test_password_users_get_jwt_tokens_signed_with_a_private_key(secure: EtcdCluster) -> None:
    assert secure.certs is not None
    for m in secure.members:
        argv = m.argv()
        flag = argv[argv.index("--auth-token") + 1]
        assert flag.startswith("jwt,") and "sign-method=RS256" in flag
    assert stat.S_IMODE((secure.certs.root / "jwt.key").stat().st_mode) == 0o600


def test_a_token_issued_before_a_role_change_is_renewed(secure: EtcdCluster, tmp_path: Path) -> None:
    # A JWT carries the auth revision it was issued at; etcd 3.4 refuses it once users or roles
    # change ("revision of auth store is old"; a watch: "permission denied").
    pw = tmp_path / "pw"
    pw.write_text("bob-secret-pw")
    s = EtcdStore(secure.url_for("mallory") + f"&user=bob&password-file={pw}")
    admin = EtcdStore(secure.url)
    try:
        before = s._metadata
        s.put("/a/stale-0", b"0")
        admin.ensure_role("team-z", [("read", "/z/")])  # the auth revision moves on
        rev = s.put("/a/stale-1", b"1")
        assert s._metadata != before
        assert s.get("/a/stale-1").mod_revision == rev
        admin.ensure_role("team-y", [("read", "/y/")])
        w = s.watch("/a/", start_revision=rev)
        assert rev in [e.revision for e in w.poll(10)]
        w.close()
        with pytest.raises(Forbidden):  # a watch really refused still says so
            s.watch("/b/")
    finally:
        admin.close()
        s.close()
