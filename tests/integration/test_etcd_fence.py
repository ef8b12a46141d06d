"""The lab's etcd client over HTTP against the fake gateway (``FakeEtcd`` on 127.0.0.1): the
deploy lock's fence on a route write, as the JSON goes over the wire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.errors import FencedOut
from lab.ports.etcd import Etcd, Fence
from lab.release import lock, routes
from tests.integration.fakes import FakeEtcd

ROUTES = routes.PREFIX + "app"
DOC = {"service": "app", "servers": []}


@pytest.fixture
def fake() -> Iterator[FakeEtcd]:
    server = FakeEtcd()
    yield server
    server.shutdown()
    server.server_close()


def test_a_fenced_route_write_over_http_goes_through_then_is_refused(fake: FakeEtcd) -> None:
    etcd = Etcd("127.0.0.1", fake.port)
    with lock.held(etcd, "deploy app bbbbbbbbbbbb") as me:
        assert me.fence == Fence(lock.KEY, fake.store.create_revision(lock.KEY))
        etcd.put_json(ROUTES, DOC, me.fence)
        lease = etcd.lease(lock.KEY)
        assert lease is not None
        fake.store.expire(lease)
        other = etcd.create(lock.KEY, b'{"who": "ada@ws"}', etcd.grant(20))
        assert isinstance(other, Fence) and other.revision > me.fence.revision
        with pytest.raises(FencedOut) as err:
            etcd.put_json(ROUTES, {**DOC, "servers": ["x"]}, me.fence)
    assert err.value.found == b'{"who": "ada@ws"}'
    assert etcd.get_json(ROUTES) == DOC
    # the run's end revokes its own lease only: the other holder's lock stays
    assert etcd.get(lock.KEY) == b'{"who": "ada@ws"}'
