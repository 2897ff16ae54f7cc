"""A restarted agent does not wait out the lease of a dead predecessor's Node on this machine
(the controller manager's leader takeover, for Nodes): it revokes that lease and registers."""

from __future__ import annotations

import pytest

from apis import AlreadyExists, Node, NodeSpec, ObjectMeta, Registry
from apis._config import SiteConfig
from apis._registry import object_key
from nodeagent._reporter import AGENT_PROCESS
from store.process import process_tag
from tests._support import dead_process_tag, tag_not_known_dead

from .conftest import AgentFactory


def _left_behind(registry: Registry, name: str, tag: str) -> int:
    """A Node as an agent killed outright leaves it: under a lease nobody waits out (an hour)."""
    lease = registry.store.lease_grant(3600)
    registry.create(Node(metadata=ObjectMeta(name=name, namespace="default", annotations={AGENT_PROCESS: tag}),
                         spec=NodeSpec(hostname="h", cpus=4)), lease=lease)
    return lease


def test_a_node_whose_agent_died_on_this_machine_is_taken_over_without_waiting_out_its_lease(
        registry: Registry, site: SiteConfig, agent: AgentFactory) -> None:
    old = _left_behind(registry, "n1", dead_process_tag())
    a = agent("n1", register_timeout=120)  # returns once registered: waiting an hour would time out
    node = registry.get(Node, "n1")
    assert a.lease != old
    assert node.metadata.annotations[AGENT_PROCESS] == process_tag()
    assert node.spec.cpus == 8  # ours, not the dead agent's


@pytest.mark.parametrize("who", ["alive here", "on another machine", "no process named"])
def test_a_node_whose_agent_is_not_known_dead_is_waited_for(registry: Registry, site: SiteConfig,
                                                            agent: AgentFactory, who: str) -> None:
    tag = tag_not_known_dead(who)
    old = _left_behind(registry, "n1", tag)
    with pytest.raises(AlreadyExists):
        agent("n1", register_timeout=0.5)
    kv = registry.store.get(object_key(Node, "default", "n1"))
    assert kv is not None and kv.lease == old  # still the first agent's
