"""``queue submit`` on a site that lists its queues (``spec.queues``, from ``init
--template``): only those queues, within their limits; a refusal is one line and writes nothing."""

from __future__ import annotations

import pytest

from apis import BatchJob, Registry
from apis._config import SiteConfig
from apis._site_templates import TEMPLATES

from .conftest import make_site
from .test_cli_queue import run


@pytest.mark.parametrize(("args", "message"), [
    (["-n", "1", "-t", "30"], "error: site testsite has the queues debug, debug-scaling, prod: pass -q QUEUE"),
    (["-n", "1", "-t", "30", "-q", "nosuch"],
     "error: queue \"nosuch\" is not one of site testsite's queues (debug, debug-scaling, prod)"),
    (["-n", "3", "-t", "30", "-q", "debug"], "error: queue debug allows at most 2 node(s), not 3"),
    (["-n", "2", "-t", "61", "-q", "debug"], "error: queue debug allows at most 60 minutes, not 61"),
])
def test_a_request_beyond_the_sites_queues_is_refused(registry: Registry, site: SiteConfig, args: list[str],
                                                      message: str) -> None:
    make_site(registry, site, **TEMPLATES["aurora"])
    before = registry.store.current_revision()
    code, out, err = run(site, "queue", "submit", *args)
    assert (code, out, err.replace(site.name, "testsite")) == (1, "", message + "\n")
    assert registry.store.current_revision() == before


def test_a_queue_takes_at_most_its_queued_jobs(registry: Registry, site: SiteConfig) -> None:
    make_site(registry, site, **TEMPLATES["aurora"])  # debug: one queued BatchJob at a time
    code, out, err = run(site, "queue", "submit", "-n", "2", "-t", "60", "-q", "debug", "-A", "P", "--name", "a")
    assert (code, err) == (0, ""), err
    code, out, err = run(site, "queue", "submit", "-n", "1", "-t", "10", "-q", "debug", "--name", "b")
    assert code == 1 and err == "error: queue debug allows at most 1 queued BatchJob(s): 1 already wait\n"
    assert registry.try_get(BatchJob, "b") is None
    code, _, err = run(site, "queue", "submit", "-n", "100", "-t", "600", "-q", "prod", "--name", "c")
    assert (code, err) == (0, "")
