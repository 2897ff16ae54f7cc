"""Throwaway etcd members and clusters on 127.0.0.1, for the tests and the benchmarks
(in the spirit of ``globus_sdk.testing``: shipped with the package so both can import it,
and importing nothing of ours, as ``store`` may not).

Usage::

    from store.testing import EtcdCluster

    with EtcdCluster.start(members=1) as cluster:   # or members=3
        store = open_store(cluster.url)              # "etcd://127.0.0.1:PORT[,...]"
        cluster.members[0].kill()                    # SIGKILL one member
        cluster.members[0].restart()                 # same flags, same data dir

Members listen on free ports picked by the kernel, keep their data under /dev/shm (tmpfs:
fsync is cheap there, so figures measure etcd rather than the disk) and use the flags of
shared/recipes/etcd.md plus the limits that ``store._etcd`` needs because it never splits a
txn (``--max-txn-ops 100000 --max-request-bytes 67108864``).
``scripts/etcd-up`` starts the same single member from a shell.

TLS and auth (docs/design.md, "Sites on a shared etcd")::

    with EtcdCluster.start(members=3, tls=True, auth=True) as cluster:
        cluster.url                    # ...?cacert=CA&cert=root.crt&key=root.key: acts as root
        cluster.url_for("site-polaris")  # a client certificate whose CN is that etcd user

``tls=True`` makes a throwaway CA and certificates with ``openssl`` (:class:`Certificates`,
private keys 0600) and serves clients and peers over TLS with client certificates required;
etcd then takes a client certificate's CN as its user.  ``auth=True`` also creates the
``root`` user and turns etcd's auth on.  ``limits=ETCD_DEFAULT_LIMITS`` starts members with
etcd's own defaults (128 ops per txn, 1.5 MiB per request), as a site's etcd run by someone
else would be.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD_BIN = "/usr/bin/etcd"  # Debian's etcd-server

# The limits the store backend relies on (see store/_etcd.py); tests may override them.
DEFAULT_LIMITS: dict[str, str] = {
    "--max-txn-ops": "100000",
    "--max-request-bytes": str(64 << 20),
    "--quota-backend-bytes": str(8 << 30),
}


# etcd's own defaults, for members "run by someone else" (the store must work within them).
ETCD_DEFAULT_LIMITS: dict[str, str] = {
    "--max-txn-ops": "128",
    "--max-request-bytes": str(3 << 19),  # 1.5 MiB
}

# The SAN every certificate gets: servers are reached at 127.0.0.1, clients may use "localhost".
_OPENSSL_EXT = """[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:127.0.0.1,DNS:localhost
extendedKeyUsage = serverAuth,clientAuth
"""


@dataclass
class Certificates:
    """A throwaway CA in ``root`` and certificates it signed, made with ``openssl``:
    ``ca.crt``, ``server.crt``/``.key`` and one ``NAME.crt``/``NAME.key`` per client (CN=NAME,
    which etcd takes as the user name).  Private keys are 0600, the directory 0700."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @classmethod
    def create(cls, root: Path, clients: tuple[str, ...] = ("root",), days: int = 30) -> Certificates:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        (root / "san.cnf").write_text(_OPENSSL_EXT)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(root / "ca.key"),
                 "-out", str(root / "ca.crt"), "-days", str(days), "-subj", "/CN=balsam-test-ca")
        os.chmod(root / "ca.key", 0o600)
        certs = cls(root)
        for name in ("server", *clients):
            certs.issue(name, days)
        return certs

    def issue(self, name: str, days: int = 30) -> tuple[Path, Path]:
        """(certificate, key) for CN ``name``, made once."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"bad certificate name {name!r}")
        crt, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        if crt.exists() and key.exists():
            return crt, key
        csr = self.root / f"{name}.csr"
        old = os.umask(0o077)  # the key is private from its first byte
        try:
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                     "-subj", f"/CN={name}")
        finally:
            os.umask(old)
        os.chmod(key, 0o600)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.root / "ca.key"),
                 "-CAcreateserial", "-out", str(crt), "-days", str(days),
                 "-extfile", str(self.root / "san.cnf"), "-extensions", "ext")
        csr.unlink()
        return crt, key

    def jwt_keys(self) -> tuple[Path, Path]:
        """(public, private) RSA key pair that signs etcd's JWT auth tokens, made once."""
        pub, priv = self.root / "jwt.pub", self.root / "jwt.key"
        if not (pub.exists() and priv.exists()):
            old = os.umask(0o077)
            try:
                _openssl("genrsa", "-out", str(priv), "2048")
            finally:
                os.umask(old)
            os.chmod(priv, 0o600)
            _openssl("rsa", "-in", str(priv), "-pubout", "-out", str(pub))
        return pub, priv

    def auth_token_flag(self, ttl: str = "5m") -> str:
        """``--auth-token``'s value for JWT tokens signed with RS256 by :meth:`jwt_keys`."""
        pub, priv = self.jwt_keys()
        return f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl={ttl}"

    def query(self, name: str) -> str:
        """The store URL's query naming CN ``name``'s certificate (made if need be)."""
        crt, key = self.issue(name)
        return f"cacert={self.ca}&cert={crt}&key={key}"


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {' '.join(r.stderr.split())[-300:]}")


def etcd_binary() -> str | None:
    """The etcd to run: ``$BALSAM_ETCD_BIN`` if set (another server version, e.g. to compare
    3.4 with 3.5 in ``bench etcd-cost``), else Debian's, else the first on PATH; None when
    there is none."""
    chosen = os.environ.get("BALSAM_ETCD_BIN")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    if os.access(ETCD_BIN, os.X_OK):
        return ETCD_BIN
    return shutil.which("etcd")


def etcd_available() -> bool:
    return etcd_binary() is not None


def etcd_version(binary: str | None = None) -> str | None:
    """``etcd --version``'s server version (``3.4.30``), or None."""
    binary = binary or etcd_binary()
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tmp_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    initial_cluster: str
    data_dir: Path
    limits: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    proc: subprocess.Popen[bytes] | None = None
    binary: str = ETCD_BIN
    certs: Certificates | None = None  # TLS for clients and peers, client certificates required
    # Raft timing (ms): fast for tests; etcd's own defaults are 100 / 1000, which a cluster
    # sharing a loaded 2-core machine with its workload needs (heartbeats every 10 ms to each
    # peer cost a 3-member TLS cluster two thirds of its writes there).
    heartbeat_ms: int = 10
    election_ms: int = 100
    # etcd's --auth-token (tokens of users who sign in with a password; a certificate's CN
    # needs none): None leaves etcd's default, "simple".
    auth_token: str | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def argv(self) -> list[str]:
        scheme = "https" if self.certs else "http"
        client = f"{scheme}://127.0.0.1:{self.client_port}"
        peer = f"{scheme}://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--logger", "zap", "--log-level", "warn",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", f"balsam-{self.data_dir.parent.name}",
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
        ]  # fmt: skip
        for flag, value in self.limits.items():
            argv += [flag, value]
        if self.certs:
            ca, crt, key = str(self.certs.ca), str(self.certs.root / "server.crt"), str(self.certs.root / "server.key")
            argv += ["--cert-file", crt, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
                     "--peer-cert-file", crt, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
                     "--peer-client-cert-auth"]
        if self.auth_token:
            argv += ["--auth-token", self.auth_token]
        return argv

    def launch(self) -> None:
        """Start the process (same flags and data dir on a restart); does not wait."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # Popen keeps its own copy
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{'https' if self.certs else 'http'}://{self.endpoint}/health"
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # not via $http_proxy
        if self.certs:
            context = ssl.create_default_context(cafile=str(self.certs.ca))
            crt, key = self.certs.issue("root")
            context.load_cert_chain(str(crt), str(key))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd member {self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with opener.open(url, timeout=1) as resp:
                    if b'"health":"true"' in resp.read():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {self.name} not healthy after {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    def restart(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.data_dir.parent / f"{self.name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    root: Path
    certs: Certificates | None = None
    auth: bool = False

    @property
    def plain_url(self) -> str:
        """``etcd://127.0.0.1:P1,127.0.0.1:P2,...``: the members, no credentials."""
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        """The store URL naming every member (with TLS: as the ``root`` user's certificate)."""
        return self.url_for("root")

    def url_for(self, user: str) -> str:
        """The store URL of a client whose certificate's CN is ``user`` (plain URL without TLS)."""
        if self.certs is None:
            return self.plain_url
        return f"{self.plain_url}?{self.certs.query(user)}"

    @classmethod
    def start(
        cls, members: int = 1, limits: dict[str, str] | None = None, timeout: float = 15.0,
        prefix: str = "balsam-etcd.", tls: bool = False, auth: bool = False,
        heartbeat_ms: int = 10, election_ms: int = 100, auth_token: str = "jwt", token_ttl: str = "5m",
    ) -> EtcdCluster:
        """Start ``members`` fresh members (data in a new ``/dev/shm/PREFIX*``) and wait until
        every one reports healthy.  ``tls``: a new CA and certificates (``cluster.certs``);
        ``auth`` (implies ``tls``): the ``root`` user, then etcd's auth turned on, with
        ``auth_token`` tokens for password users: ``"jwt"`` (RS256, a key pair made with
        openssl, valid ``token_ttl``) or etcd's default ``"simple"``.  JWT, because a password
        user's puts from 8 threads were 1.5 x faster with it than with simple tokens (etcd
        3.4 takes a global lock per request to look a simple token up and extend its TTL;
        a JWT is checked by its signature alone: docs/design.md)."""
        if auth_token not in ("jwt", "simple"):
            raise ValueError(f"auth_token must be 'jwt' or 'simple', not {auth_token!r}")
        tls = tls or auth
        binary = etcd_binary()
        if not binary:
            raise RuntimeError(f"etcd not found at {ETCD_BIN} (scripts/install installs it)")
        root = Path(tempfile.mkdtemp(prefix=prefix, dir=_tmp_root()))
        try:
            certs = Certificates.create(root / "pki") if tls else None
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            token = certs.auth_token_flag(token_ttl) if certs is not None and auth and auth_token == "jwt" else None
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        ports = free_ports(2 * members)
        names = [f"m{i + 1}" for i in range(members)]
        scheme = "https" if tls else "http"
        initial = ",".join(f"{n}={scheme}://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
        merged = dict(DEFAULT_LIMITS)
        merged.update(limits or {})
        cluster = cls(
            [
                EtcdMember(n, ports[2 * i], ports[2 * i + 1], initial, root / n, dict(merged), binary=binary,
                           certs=certs, heartbeat_ms=heartbeat_ms, election_ms=election_ms, auth_token=token)
                for i, n in enumerate(names)
            ],
            root,
            certs,
        )
        try:
            for m in cluster.members:
                m.launch()
            for m in cluster.members:
                m.wait_healthy(timeout)
            if auth:
                cluster.enable_auth()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def enable_auth(self) -> None:
        """Create the ``root`` user (no password: it signs in by certificate) with the root role,
        and turn etcd's auth on."""
        from ._etcd import EtcdStore  # here, so that importing this module needs no etcd client

        store = EtcdStore(self.url)
        try:
            store.ensure_user("root", roles=("root",))
            store.auth_enable()
        finally:
            store.close()
        self.auth = True

    def member_at(self, endpoint: str) -> EtcdMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def leader(self) -> EtcdMember:
        """The member that is raft leader now, as the live members report it."""
        import etcd3  # here, so that importing this module needs no etcd client
        from etcd3 import etcdrpc

        by_id: dict[int, EtcdMember] = {}
        leader_id = 0
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            if self.certs is not None:
                crt, key = self.certs.issue("root")
                client = etcd3.client("127.0.0.1", m.client_port, timeout=5, ca_cert=str(self.certs.ca),
                                      cert_key=str(key), cert_cert=str(crt))
            else:
                client = etcd3.client("127.0.0.1", m.client_port, timeout=5)
            try:
                status = etcdrpc.MaintenanceStub(client.channel).Status(etcdrpc.StatusRequest(), 5)
            finally:
                client.close()
            by_id[status.header.member_id] = m
            leader_id = leader_id or status.leader
        if leader_id not in by_id:
            raise RuntimeError("no live member is the leader")
        return by_id[leader_id]

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every member (SIGTERM to all at once, then SIGKILL after ``timeout`` seconds)
        and remove the data. Members of a cluster that is going away may wait 5 s for peers,
        hence the short default."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            m.stop(timeout=timeout)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _up(argv: list[str]) -> int:
    """``python -m store.testing up [--members N] [--tls] [--auth] [--etcd-defaults]``: start a
    cluster that outlives this process (what ``scripts/etcd-up --members 3 --tls`` runs), write
    its pids to ``ROOT/balsam-etcd-PORT/pids`` (PORT: the first member's client port; ROOT:
    ``$ETCD_UP_ROOT``, else /dev/shm) and print its store URL (certificate paths, no secret)."""
    import argparse

    p = argparse.ArgumentParser(prog="etcd-up")
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--tls", action="store_true", help="a local CA and certificates; clients must present one")
    p.add_argument("--auth", action="store_true",
                   help="also the root user and etcd's auth on, JWT tokens for password users (implies --tls)")
    p.add_argument("--etcd-defaults", action="store_true", help="etcd's own limits (128 ops per txn, 1.5 MiB)")
    args = p.parse_args(argv)
    if args.members < 1:
        p.error("--members must be at least 1")
    os.umask(0o077)  # certificates, keys, pids and URL files: private
    root = os.environ.get("ETCD_UP_ROOT") or _tmp_root() or tempfile.gettempdir()
    cluster = EtcdCluster.start(args.members, limits=ETCD_DEFAULT_LIMITS if args.etcd_defaults else None,
                                tls=args.tls, auth=args.auth, timeout=30, prefix="balsam-etcd-up.")
    final = Path(root) / f"balsam-etcd-{cluster.members[0].client_port}"
    # The members keep their data where they started; the well-known directory points there.
    final.mkdir(mode=0o700, exist_ok=True)
    (final / "pids").write_text("".join(f"{m.proc.pid}\n" for m in cluster.members if m.proc))
    (final / "root").write_text(str(cluster.root) + "\n")
    (final / "url").write_text(cluster.url + "\n")
    print(cluster.url)
    return 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["up"]:
        print("usage: python -m store.testing up [--members N] [--tls] [--auth] [--etcd-defaults]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(_up(sys.argv[2:]))
