"""A release on a swarm is a service of N replicas (``lab.release.replicas``): how many it
wants, and the pure verdicts read from its task objects, tested on task JSON shaped as Docker
20.10's API gives it (``data/swarm-tasks-20.10.json``) and variants of it: no engine."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.release import replicas

DATA = json.loads((Path(__file__).parent / "data" / "swarm-tasks-20.10.json").read_text())
NODES: dict[str, str] = DATA["_nodes"]
PROD, PROD2, PROD3 = NODES  # the manager first
IMAGE = "10.100.200.200:5000/cdlab/app@sha256:" + "3f9c2e1a" * 8
NO_IMAGE = f"No such image: {IMAGE}"
UNHEALTHY = "task: non-zero exit (137): dockerexec: unhealthy container"
NO_NODE = (
    "no suitable node (1 node not available for new tasks; scheduling constraints not "
    "satisfied on 2 nodes)"
)


def T(name: str, **change: Any) -> dict[str, Any]:
    """The recorded task ``name``, with top-level fields (ID, Slot, NodeID, DesiredState) and
    ``Status`` fields (State, Err, Timestamp) changed; a ``None`` removes the field."""
    doc: dict[str, Any] = copy.deepcopy(DATA[name])
    for key, value in change.items():
        where = doc["Status"] if key in ("State", "Err", "Timestamp") else doc
        if value is None:
            where.pop(key, None)
        else:
            where[key] = value
    return doc


def cid(doc: dict[str, Any]) -> str:
    return str(doc["Status"]["ContainerStatus"]["ContainerID"])


RM, RW = T("running-manager"), T("running-worker")  # slot 1 on prod, slot 2 on prod-2
REJECTED, FAILED = T("rejected-no-such-image"), T("failed-unhealthy")  # prod-3, prod-2
PENDING = T("pending-no-suitable-node")  # slot 3, unscheduled
ON_PROD3 = T("running-worker", ID="t3", Slot=3, NodeID=PROD3)  # the same container ID as RW
BOTH = {cid(RM): "healthy", cid(RW): "healthy"}


@pytest.mark.parametrize(
    ("manifest", "nodes", "wanted"),
    [
        (None, 0, 0),  # no swarm: a plain container
        (3, 0, 0),  # the manifest's value is not applied on a single host
        (None, 1, 1),
        (None, 3, 3),  # one per ready node
        (2, 3, 2),
        (5, 3, 5),  # more than the nodes: Swarm spreads them, some nodes run two
        (1, 3, 1),
        (None, 12, 8),  # never more than the proxy's slots for a release
    ],
)
def test_wanted_is_the_manifests_or_one_per_node_and_none_without_a_swarm(
    manifest: int | None, nodes: int, wanted: int
) -> None:
    assert replicas.wanted(manifest, nodes) == wanted


def test_wanted_refuses_a_negative_node_count() -> None:
    with pytest.raises(ValueError, match="-1"):
        replicas.wanted(None, -1)


@pytest.mark.parametrize(
    ("doc", "fields"),
    [
        (RM, (1, PROD, "running", "running", "", cid(RM), "10.100.240.3")),
        (RW, (2, PROD2, "running", "running", "", cid(RW), "10.100.240.6")),
        (REJECTED, (3, PROD3, "rejected", "shutdown", NO_IMAGE, "", "10.100.240.5")),
        (FAILED, (2, PROD2, "failed", "shutdown", UNHEALTHY, cid(FAILED), "10.100.240.4")),
        (PENDING, (3, "", "pending", "running", NO_NODE, "", "")),
    ],
)
def test_a_task_object_is_read_into_the_fields_cdlab_uses(
    doc: dict[str, Any], fields: tuple[object, ...]
) -> None:
    t = replicas.task(doc)
    assert t.id == doc["ID"]
    assert (t.slot, t.node, t.state, t.desired, t.err, t.container, t.address()) == fields
    assert t.address("ingress") == ""


def test_a_task_on_a_lost_node_is_not_running_though_its_state_says_so() -> None:
    stale = replicas.task(T("running-worker", DesiredState="shutdown"))
    assert stale.state == "running" and not stale.running and not stale.ended


# (tasks, healths, wanted, outcome, the word)
VERDICTS: list[tuple[list[dict[str, Any]], dict[str, str], int, str, str]] = [
    ([RM, RW], BOTH, 2, "done", "2 of 2 healthy"),
    ([RM, RW, FAILED], BOTH, 2, "done", "2 of 2 healthy"),  # one failure replaced in time
    ([RM, RW], BOTH, 1, "done", "2 of 1 healthy"),
    (
        [RM, RW],
        {cid(RM): "healthy", cid(RW): "starting"},
        2,
        "waiting",
        "1 of 2 healthy; task 2 on prod-2 running, health starting",
    ),
    (
        [RM, RW],
        {cid(RM): "healthy"},
        2,
        "waiting",
        "1 of 2 healthy; task 2 on prod-2 running, health not read yet",
    ),
    (
        [RM, RW],
        {cid(RM): "healthy", cid(RW): "unhealthy"},
        2,
        "waiting",
        "1 of 2 healthy; task 2 on prod-2 running, health unhealthy",
    ),
    (
        [RM, RW, REJECTED, PENDING],
        BOTH,
        3,
        "waiting",
        f"2 of 3 healthy; task 3 on no node pending: {NO_NODE}; task 3 on prod-3 ended: {NO_IMAGE}",
    ),
    (
        [RM, T("rejected-no-such-image", State="preparing", Err=None, DesiredState="running")],
        {cid(RM): "healthy"},
        2,
        "waiting",
        "1 of 2 healthy; task 3 on prod-3 preparing (pulling its image)",
    ),
    ([], {}, 1, "waiting", "0 of 1 healthy; no task yet"),
    (
        [RM, T("running-worker", State="starting")],  # its container not yet healthy once
        {cid(RM): "healthy", cid(RW): "starting"},
        2,
        "waiting",
        "1 of 2 healthy; task 2 on prod-2 starting, health starting",
    ),
    (
        [RM, T("running-worker", DesiredState="shutdown")],  # on a lost node: not counted
        BOTH,
        2,
        "waiting",
        "1 of 2 healthy; no task yet",
    ),
    (
        [RM, REJECTED, FAILED, T("failed-unhealthy", ID="t9", Timestamp="2024-05-02T09:13:04Z")],
        {cid(RM): "healthy"},
        3,
        "failed",
        f"crash loop: 3 tasks ended; the last, task 2 on prod-2: {UNHEALTHY}",
    ),
    (
        [RM, RW, REJECTED, T("rejected-no-such-image", ID="r2"), T("failed-unhealthy")],
        BOTH,
        2,
        "failed",  # a crash loop fails even when enough replicas run: it is checked first
        f"crash loop: 3 tasks ended; the last, task 2 on prod-2: {UNHEALTHY}",
    ),
]


@pytest.mark.parametrize(("tasks", "healths", "wanted", "outcome", "word"), VERDICTS)
def test_the_verdict_on_a_starting_release(
    tasks: list[dict[str, Any]], healths: dict[str, str], wanted: int, outcome: str, word: str
) -> None:
    v = replicas.verdict(tasks, healths, wanted, NODES)
    assert (v.outcome, v.word) == (outcome, word)
    assert v.done is (outcome == "done") and v.failed is (outcome == "failed")
    assert (v.evidence is not None) is v.failed


def test_a_crash_loops_evidence_is_its_newest_ended_task_with_node_and_container() -> None:
    older = T("failed-unhealthy", ID="old", Timestamp="2024-05-02T09:13:05.5Z")  # Go trims 0s
    newest = T("failed-unhealthy", ID="new", Timestamp="2024-05-02T09:13:05.59Z")
    v = replicas.verdict([older, newest, REJECTED], {}, 3, NODES)
    assert v.evidence is not None
    assert (v.evidence.id, v.evidence.node, v.evidence.container) == ("new", PROD2, cid(FAILED))


def test_without_node_names_the_verdict_names_the_node_id() -> None:
    v = replicas.verdict([RM, RW], {cid(RM): "healthy"}, 2)
    assert v.word == f"1 of 2 healthy; task 2 on {PROD2} running, health not read yet"


def test_a_verdict_needs_a_wanted_replica() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        replicas.verdict([RM], BOTH, 0)


ON_INGRESS = copy.deepcopy(RW)
ON_INGRESS["NetworksAttachments"][0]["Network"]["Spec"]["Name"] = "ingress"


@pytest.mark.parametrize(
    ("tasks", "target"),
    [
        ([RM, RW], ("10.100.240.6", PROD2, 2)),  # a worker's: its requests cross the overlay
        ([RW, RM], ("10.100.240.6", PROD2, 2)),
        ([RM, ON_PROD3, RW], ("10.100.240.6", PROD2, 2)),  # the lowest slot of the workers
        ([RM], ("10.100.240.3", PROD, 1)),  # no worker runs one: the manager's
        ([RM, T("running-worker", DesiredState="shutdown")], ("10.100.240.3", PROD, 1)),
        ([RM, ON_INGRESS], ("10.100.240.3", PROD, 1)),  # no address on the apps network
        ([REJECTED, PENDING, FAILED], None),
        ([], None),
    ],
)
def test_the_integration_tests_target_a_replica_on_a_worker_first(
    tasks: list[dict[str, Any]], target: tuple[str, str, int] | None
) -> None:
    found = replicas.test_target(tasks, PROD)
    assert (found and (found.address, found.node, found.slot)) == target


def test_running_replicas_are_listed_by_slot_with_their_address() -> None:
    found = replicas.running([ON_PROD3, REJECTED, RW, PENDING, RM])
    assert [(r.slot, r.address, r.task) for r in found] == [
        (1, "10.100.240.3", RM["ID"]),
        (2, "10.100.240.6", RW["ID"]),
        (3, "10.100.240.6", "t3"),
    ]


STALE = T("running-worker", DesiredState="shutdown")  # its node stopped answering
COMPLETE = T("failed-unhealthy", State="complete", Err=None)

# (tasks now, healths, lost nodes, tasks when the bake began, addresses the proxy has DOWN,
# ok, the word)
BAKES: list[
    tuple[list[dict[str, Any]], dict[str, str], set[str], list[dict[str, Any]], set[str], bool, str]
] = [
    ([RM, RW], BOTH, set(), [RM, RW], set(), True, "running replicas: 2"),
    ([RM, RW, FAILED], BOTH, set(), [RM, RW, FAILED], set(), True, "running replicas: 2"),
    (
        [RM, RW, FAILED],
        BOTH,
        set(),
        [RM, RW],
        set(),
        False,
        f"task 2 on prod-2 ended: {UNHEALTHY}",
    ),
    (
        [RM, COMPLETE],
        BOTH,
        set(),
        [RM],
        set(),
        False,
        "task 2 on prod-2 ended: complete, no error given",
    ),
    ([RM, REJECTED], BOTH, set(), [RM], set(), False, f"task 3 on prod-3 ended: {NO_IMAGE}"),
    (
        [RM, RW],
        {cid(RM): "healthy", cid(RW): "unhealthy"},
        set(),
        [RM, RW],
        set(),
        False,
        "task 2 on prod-2 is unhealthy",
    ),
    (
        [RM, RW],
        BOTH,
        set(),
        [RM, RW],
        {"10.100.240.6"},
        False,
        "the proxy has task 2 on prod-2 DOWN while it runs",
    ),
    (  # its node is Down: the failure, the stale task and the DOWN slot are the node's
        [RM, STALE, FAILED],
        {cid(RM): "healthy", cid(RW): "unhealthy"},
        {PROD2},
        [RM, RW],
        {"10.100.240.6"},
        True,
        "running replicas: 1; lost with a node (Swarm replaces them): task 2 on prod-2",
    ),
    (  # Swarm put the lost slot on prod-3 meanwhile
        [RM, STALE, ON_PROD3],
        BOTH,
        {PROD2},
        [RM, RW],
        set(),
        True,
        "running replicas: 2; lost with a node (Swarm replaces them): task 2 on prod-2",
    ),
]


@pytest.mark.parametrize(("tasks", "healths", "lost", "started", "down", "ok", "word"), BAKES)
def test_the_bake_fails_on_the_releases_own_failures_not_on_a_lost_node(
    tasks: list[dict[str, Any]],
    healths: dict[str, str],
    lost: set[str],
    started: list[dict[str, Any]],
    down: set[str],
    ok: bool,
    word: str,
) -> None:
    bake = replicas.bake_verdict(tasks, healths, lost, started=started, down=down, nodes=NODES)
    assert (bake.ok, bake.word) == (ok, word)
    assert (bake.evidence is None) is ok
