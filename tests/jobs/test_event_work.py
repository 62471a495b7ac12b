"""A push's event says which of Moorage's own consumers have work for it (Event.work), decided
in the push's transaction: the signing and replication consumers pass over every other push
without reading anything, and an event without the decision (written before it existed) is
still looked at by all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage import events as ev
from moorage.app import Moorage
from moorage.clock import FixedClock
from moorage.metadata.outbox import StoredEvent
from moorage.model import Repository, RepositoryName
from moorage.replication import ReplicationSink
from moorage.signing import SigningSink
from tests.jobs.conftest import services
from tests.jobs.test_gc import REG, push_image

pytestmark = pytest.mark.anyio

PROFILE = f"arn:aws:signer:us-east-1:{REG.account_id}:/signing-profiles/release"
PUSHER = f"arn:aws:iam::{REG.account_id}:user/ci"


@pytest.fixture
async def moorage(tmp_path: Path) -> AsyncIterator[Moorage]:
    async with services(tmp_path, {"jobs.enabled": False}) as built:
        yield built


async def _push_events(m: Moorage) -> list[StoredEvent]:
    async with m.metadata.transaction() as tx:
        found = await tx.events.after((0, 0), 1000)
    return [e for e in found if e.detail_type == ev.IMAGE_ACTION and '"action-type":"PUSH"' in e.body]


def _sinks(m: Moorage) -> tuple[ReplicationSink, SigningSink]:
    replication = next(s for s in m.dispatcher.sinks if isinstance(s, ReplicationSink))
    signing = next(s for s in m.dispatcher.sinks if isinstance(s, SigningSink))
    return replication, signing


async def _create(m: Moorage, name: str) -> None:
    assert isinstance(m.clock, FixedClock)
    await m.registry.create_repository(Repository(REG, RepositoryName(name), created_at=m.clock.now()))


async def test_a_push_with_nothing_configured_is_passed_over_by_signing_and_replication(moorage: Moorage) -> None:
    await _create(moorage, "team/app")
    await push_image(moorage, "team/app", "v1", [b"layer"])
    (push,) = await _push_events(moorage)
    assert push.work == 0
    replication, signing = _sinks(moorage)
    assert not replication.accepts(push)
    assert not signing.accepts(push)


async def test_the_configurations_in_place_at_push_time_mark_the_push_for_their_consumers(moorage: Moorage) -> None:
    assert moorage.replication is not None
    assert moorage.signing is not None
    dest = {"region": "us-west-2", "registryId": REG.account_id}
    await moorage.replication.put_configuration(
        REG,
        {"rules": [{"destinations": [dest], "repositoryFilters": [{"filter": "prod/", "filterType": "PREFIX_MATCH"}]}]},
    )
    await moorage.signing.put_configuration(
        REG,
        {
            "rules": [
                {
                    "signingProfileArn": PROFILE,
                    "repositoryFilters": [{"filter": "prod/*", "filterType": "WILDCARD_MATCH"}],
                }
            ]
        },
    )
    for name in ("prod/api", "dev/api"):
        await _create(moorage, name)
    await push_image(moorage, "prod/api", "v1", [b"one"])
    await push_image(moorage, "prod/api", "v2", [b"two"], principal=PUSHER)
    await push_image(moorage, "dev/api", "v1", [b"three"], principal=PUSHER)
    by_machine, by_user, elsewhere = await _push_events(moorage)
    replication, signing = _sinks(moorage)
    # Moorage's own pushes (no principal) are never signed; both prod pushes are replicated.
    assert by_machine.work == ev.WORK_REPLICATION
    assert by_user.work == ev.WORK_REPLICATION | ev.WORK_SIGNING
    assert elsewhere.work == 0
    assert [replication.accepts(e) for e in (by_machine, by_user, elsewhere)] == [True, True, False]
    assert [signing.accepts(e) for e in (by_machine, by_user, elsewhere)] == [False, True, False]


async def test_an_event_without_the_decision_is_looked_at_by_every_consumer(moorage: Moorage) -> None:
    await _create(moorage, "team/app")
    await push_image(moorage, "team/app", "v1", [b"layer"])
    (push,) = await _push_events(moorage)
    undecided = StoredEvent(
        push.position,
        push.id,
        push.detail_type,
        push.account_id,
        push.region,
        push.repository,
        push.created_at,
        push.body,
    )
    assert undecided.work is None
    replication, signing = _sinks(moorage)
    assert replication.accepts(undecided)
    assert signing.accepts(undecided)
