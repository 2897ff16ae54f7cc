"""globus:// through globus-sdk 4 with ``globus_sdk.testing`` registered responses (no network):
the recipe in shared/recipes/kopf-kmock-globus.md, part B."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import globus_sdk
import pytest
import responses
from globus_sdk.testing import RegisteredResponse, load_response

from apis import Job, JobState, get_condition
from controllers.transfer.providers.globus import GlobusProvider

from .conftest import GLOBUS_EP, SITE_EP, make_app, make_jobs, make_site, tasks, wait_states, wait_until

SCOPE = f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{GLOBUS_EP}/data_access]"


@pytest.fixture(autouse=True)
def mocked_responses() -> Iterator[None]:
    responses.start()  # globus_sdk.testing registers into the default mock: activate it
    yield
    responses.stop()
    responses.reset()


@pytest.fixture
def globus(site):
    provider = GlobusProvider(site.path, client_factory=lambda: globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer("dummy-token")))
    provider.poll_interval = 0.02
    return {"globus": lambda path: provider}


def task_doc(task_id: str, status: str, **extra) -> RegisteredResponse:
    return RegisteredResponse(service="transfer", path=f"/v0.10/task/{task_id}", json={
        "DATA_TYPE": "task", "task_id": task_id, "type": "TRANSFER", "status": status, **extra})


def submits() -> list[dict]:
    return [json.loads(cast(bytes, c.request.body)) for c in responses.calls
            if c.request.method == "POST" and str(c.request.url).endswith("/v0.10/transfer")]


def setup(registry, site, n: int) -> list[Job]:
    make_site(registry, site, laptop=f"globus://{GLOBUS_EP}")
    make_app(registry)
    return make_jobs(registry, n, lambda i: {"inp": f"laptop:/data/in{i}.h5"})


def test_fifty_jobs_one_submit_listing_every_item_then_succeeded_moves_them_on(registry, site, manager, globus):
    load_response(globus_sdk.TransferClient.get_submission_id)
    submit = load_response(globus_sdk.TransferClient.submit_transfer)
    task_id = submit.metadata["task_id"]
    for status in ("ACTIVE", "ACTIVE", "SUCCEEDED"):  # same URL N times: served in order
        load_response(task_doc(task_id, status, bytes_transferred=5000, files_transferred=50))
    jobs = setup(registry, site, 50)
    manager(providers=globus, window=2.0, max_wait=120.0)  # one task: see test_file.py
    wait_states(registry, [j.name for j in jobs], {JobState.PREPROCESSED})
    (body,) = submits()
    assert (body["DATA_TYPE"], body["source_endpoint"], body["destination_endpoint"]) == \
        ("transfer", GLOBUS_EP, SITE_EP)
    assert body["verify_checksum"] is True
    assert len(body["DATA"]) == 50
    want = {(f"/data/in{i}.h5", str(site.data_path / "w" / f"j{i}" / "in.dat")) for i in range(50)}
    assert {(d["source_path"], d["destination_path"]) for d in body["DATA"]} == want
    (t,) = tasks(registry)
    assert (t.status.state, t.status.provider_task_id, t.status.files_transferred) == ("Succeeded", task_id, 50)
    assert len([c for c in responses.calls if f"/v0.10/task/{task_id}" in c.request.url]) >= 3


def test_failed_task_is_retried_then_fails_its_jobs_with_globus_message(registry, site, manager, globus):
    load_response(globus_sdk.TransferClient.get_submission_id)
    submit = load_response(globus_sdk.TransferClient.submit_transfer)
    task_id = submit.metadata["task_id"]
    load_response(task_doc(task_id, "FAILED", fatal_error={"code": "PERMISSION_DENIED",
                                                           "description": "permission denied on /data"}))
    jobs = setup(registry, site, 3)
    manager(providers=globus, max_attempts=2, window=2.0, max_wait=120.0)
    done = wait_states(registry, [j.name for j in jobs], {JobState.FAILED})
    assert len(submits()) == 2  # the first try and one retry
    assert submits()[1]["sync_level"] == 3  # the retry skips what already arrived (checksum)
    for j in done:
        assert "permission denied on /data" in j.status.message and "after 2 attempt(s)" in j.status.message
    (t,) = tasks(registry)
    assert t.status.state == "Failed" and len(t.status.failed_items) == 3


def test_consent_required_becomes_a_condition_naming_the_login_command(registry, site, manager, globus):
    load_response(globus_sdk.TransferClient.get_submission_id)
    load_response(RegisteredResponse(service="transfer", method="POST", path="/v0.10/transfer", status=403, json={
        "code": "ConsentRequired", "message": "Missing required data_access consent",
        "request_id": "abc123", "resource": "/transfer", "required_scopes": [SCOPE]}))
    jobs = setup(registry, site, 2)
    manager(providers=globus, window=2.0, max_wait=120.0)

    def job_condition():
        j = registry.get(Job, jobs[0].name)
        return get_condition(j.status.conditions, "TransferAuthRequired")

    cond = wait_until(job_condition, what="TransferAuthRequired on the job")
    command = f"balsamctl login globus --site {site.path} --data-access {GLOBUS_EP}"
    assert cond.reason == "ConsentRequired" and command in cond.message
    (t,) = tasks(registry)
    tcond = get_condition(t.status.conditions, "TransferAuthRequired")
    assert tcond is not None and command in tcond.message and "Traceback" not in tcond.message
    assert t.status.state == "Pending" and registry.get(Job, jobs[1].name).status.state is JobState.READY


def test_not_signed_in_says_which_command_to_run(site):
    from controllers.transfer.providers import AuthRequired
    from controllers.transfer.providers.globus_auth import transfer_client

    with pytest.raises(AuthRequired) as e:
        transfer_client(site.path)
    assert f"balsamctl login globus --site {site.path}" in str(e.value)
