"""``balsamctl login globus``: the SDK's command-line login flow, offline (globus_sdk.testing),
tokens stored with the SDK's token storage under the site directory, mode 0600."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import globus_sdk
import pytest
import responses
from click.testing import CliRunner
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response

from kubectl_like.cli import cli

CLIENT = "11111111-2222-4333-8444-555555555555"
COLLECTION = "aaaaaaaa-0000-4000-8000-000000000001"


@pytest.fixture(autouse=True)
def mocked_responses() -> Iterator[None]:
    responses.start()
    yield
    responses.stop()
    responses.reset()


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in ("BALSAM_SITE_PATH", "BALSAM_STORE", "BALSAM_GLOBUS_CLIENT_ID"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "site"
    r = CliRunner().invoke(cli, ["init", str(path)])
    assert r.exit_code == 0, r.output
    return path


def tokens_response() -> RegisteredResponse:
    """Globus Auth's answer to the code exchange, with a real signed id_token: the SDK fetches the
    OpenID configuration and the JWK (registered here too) and verifies it."""
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    load_response(RegisteredResponse(service="auth", path="/.well-known/openid-configuration", json={
        "issuer": "https://auth.globus.org", "jwks_uri": "https://auth.globus.org/jwk.json",
        "id_token_signing_alg_values_supported": ["RS512"]}))
    load_response(RegisteredResponse(service="auth", path="/jwk.json", json={"keys": [jwk]}))
    now = int(time.time())
    id_token = jwt.encode({"sub": "ident-1", "aud": CLIENT, "iss": "https://auth.globus.org", "iat": now,
                           "exp": now + 3600}, key, algorithm="RS512")
    transfer = {"access_token": "transfer_access_token", "refresh_token": "transfer_refresh_token",
                "scope": "urn:globus:auth:scope:transfer.api.globus.org:all", "expires_in": 172800,
                "token_type": "Bearer", "resource_server": "transfer.api.globus.org"}
    return RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", json={
        "access_token": "auth_access_token", "refresh_token": "auth_refresh_token", "scope": "openid",
        "expires_in": 172800, "token_type": "Bearer", "resource_server": "auth.globus.org",
        "id_token": id_token, "other_tokens": [transfer]})


def test_login_stores_tokens_under_the_site_readable_by_the_owner_only(site_dir):
    load_response(tokens_response())
    r = CliRunner().invoke(cli, ["--site", str(site_dir), "login", "globus", "--client-id", CLIENT],
                           input="the-auth-code\n")
    assert r.exit_code == 0, r.output
    assert "auth.globus.org/v2/oauth2/authorize" in r.output  # the SDK's flow printed the link
    (exchange,) = [c.request for c in responses.calls if c.request.url.endswith("/v2/oauth2/token")]
    assert "code=the-auth-code" in str(exchange.body)
    tokens = site_dir / "globus" / "tokens.json"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert stat.S_IMODE((site_dir / "globus").stat().st_mode) == 0o700
    assert "transfer_refresh_token" in tokens.read_text()
    assert json.loads((site_dir / "globus" / "app.json").read_text())["client_id"] == CLIENT

    # The controller's client signs its calls with the stored tokens, without prompting.
    from controllers.transfer.providers.globus_auth import transfer_client

    load_response(RegisteredResponse(service="transfer", path="/v0.10/task/t1", json={"task_id": "t1",
                                                                                       "status": "ACTIVE"}))
    assert transfer_client(site_dir).get_task("t1")["status"] == "ACTIVE"
    assert get_last_request().headers["Authorization"] == "Bearer transfer_access_token"


def test_data_access_consent_is_asked_for_and_kept(site_dir):
    load_response(tokens_response())
    r = CliRunner().invoke(cli, ["--site", str(site_dir), "login", "globus", "--client-id", CLIENT,
                                 "--data-access", COLLECTION], input="code\n")
    assert f"{COLLECTION}%2Fdata_access" in r.output or f"{COLLECTION}/data_access" in r.output
    saved = json.loads((site_dir / "globus" / "app.json").read_text())
    assert saved["data_access"] == [COLLECTION]


def test_without_a_client_id_one_error_line_and_nothing_written(site_dir):
    r = CliRunner().invoke(cli, ["--site", str(site_dir), "login", "globus"])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: no Globus client id")
    assert not (site_dir / "globus").exists()


def test_a_bad_client_id_is_refused(site_dir):
    r = CliRunner().invoke(cli, ["--site", str(site_dir), "login", "globus", "--client-id", "nope"])
    assert r.exit_code == 1 and r.stderr.strip() == 'error: invalid --client-id "nope": expected a UUID'


def test_expired_sign_in_is_an_auth_error_naming_the_command(site_dir):
    from controllers.transfer.providers import AuthRequired
    from controllers.transfer.providers.globus import GlobusProvider

    load_response(RegisteredResponse(service="transfer", path="/v0.10/task/t2", status=401, json={
        "code": "AuthenticationFailed", "message": "Token is not active", "request_id": "r1"}))
    p = GlobusProvider(site_dir, client_factory=lambda: globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer("stale")))
    answer = p.poll(["t2"])["t2"]
    assert isinstance(answer, AuthRequired)
    assert f"balsamctl login globus --site {site_dir}" in str(answer)
