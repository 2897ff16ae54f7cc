"""The elastic queue held to the limits of its scheduler queue when the Site lists its queues
(``spec.queues``, e.g. from ``init --template aurora``)."""

from __future__ import annotations

from apis import ElasticQueue, Site
from apis._site_templates import TEMPLATES
from controllers.batch.elastic import within_queue_limits


def aurora() -> Site:
    return Site.model_validate({"metadata": {"name": "aurora"}, "spec": {**TEMPLATES["aurora"], "path": "/s"}})


def test_an_elastic_queue_on_a_listed_queue_never_asks_beyond_it() -> None:
    eq = ElasticQueue.model_validate({"queue": "debug", "minNodes": 4, "maxNodes": 16, "minWallTimeMin": 90,
                                      "maxWallTimeMin": 120, "maxQueuedJobs": 5})
    held = within_queue_limits(eq, aurora())
    assert (held.min_nodes, held.max_nodes) == (2, 2)
    assert (held.min_wall_time_min, held.max_wall_time_min) == (60, 60)
    assert held.max_queued_jobs == 1


def test_a_queue_the_site_does_not_list_keeps_the_elastic_queues_own_limits() -> None:
    eq = ElasticQueue.model_validate({"queue": "special", "maxNodes": 16})
    assert within_queue_limits(eq, aurora()) == eq
    prod = ElasticQueue.model_validate({"queue": "prod", "maxNodes": 16, "maxWallTimeMin": 60})
    assert within_queue_limits(prod, aurora()) == prod  # already within prod's limits
