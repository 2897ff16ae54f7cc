"""http(s):// stage-in against a real HTTP server on 127.0.0.1 (``http.server`` in a thread)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apis import JobState
from tests._deadline import DEADLINE

from .conftest import make_app, make_jobs, make_site, tasks, wait_states


class Server:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}  # path -> how many 503s before a 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                n = outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if self.path.startswith("/missing"):
                    self.send_error(404, "Not Found")
                    return
                if n <= outer.fail_first.get(self.path, 0):
                    self.send_error(503, "Service Unavailable")
                    return
                body = f"payload of {self.path}\n".encode() * 1000
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fast_http():
    from controllers.transfer.providers.http import HttpProvider

    return {"http": lambda site: HttpProvider(retries=3, backoff=0.02, timeout=DEADLINE)}  # no test waits on it


def test_200_is_streamed_to_the_workdir(registry, site, server, manager, fast_http):
    make_site(registry, site, web=server.url)
    make_app(registry)
    # One task for the three: a window a loaded machine's pauses cannot split (the default
    # 0.05 s could, when the jobs became READY in two batches).
    manager(providers=fast_http, window=2.0, max_wait=120.0)
    make_jobs(registry, 3, lambda i: {"inp": f"web:/data/f{i}.dat"})
    wait_states(registry, ["j0", "j1", "j2"], {JobState.PREPROCESSED})
    got = (site.data_path / "w" / "j1" / "in.dat").read_bytes()
    assert got == b"payload of /data/f1.dat\n" * 1000
    (t,) = tasks(registry)
    assert t.spec.provider == "http" and t.status.bytes_transferred == 3 * len(got)


def test_404_fails_the_job_at_once_with_the_status(registry, site, server, manager, fast_http):
    make_site(registry, site, web=server.url)
    make_app(registry)
    manager(providers=fast_http, max_attempts=3)
    make_jobs(registry, 1, lambda i: {"inp": "web:/missing.dat"})
    (job,) = wait_states(registry, ["j0"], {JobState.FAILED})
    assert "HTTP 404 Not Found" in job.status.message
    assert server.hits["/missing.dat"] == 1  # a 4xx is not retried
    assert tasks(registry)[0].status.attempts == 1


def test_503_then_200_is_retried_with_backoff(registry, site, server, manager, fast_http):
    server.fail_first["/flaky.dat"] = 2
    make_site(registry, site, web=server.url)
    make_app(registry)
    manager(providers=fast_http)
    make_jobs(registry, 1, lambda i: {"inp": "web:/flaky.dat"})
    wait_states(registry, ["j0"], {JobState.PREPROCESSED})
    assert server.hits["/flaky.dat"] == 3
    assert (site.data_path / "w" / "j0" / "in.dat").read_bytes().startswith(b"payload of /flaky.dat")


def test_connection_refused_is_retried_then_fails_with_the_reason(registry, site, manager, fast_http):
    make_site(registry, site, web=f"http://127.0.0.1:{closed_port()}")
    make_app(registry)
    manager(providers=fast_http, max_attempts=2)
    make_jobs(registry, 1, lambda i: {"inp": "web:/x.dat"})
    (job,) = wait_states(registry, ["j0"], {JobState.FAILED})
    assert "ConnectError" in job.status.message and "gave up after 4 tries" in job.status.message
    assert tasks(registry)[0].status.attempts == 2
    assert not list((site.data_path / "w" / "j0").glob("*"))  # no half file left behind
