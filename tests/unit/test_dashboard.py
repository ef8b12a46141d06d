"""The saved graphite-web dashboard (lab.stack.dashboard): per service, requests, errors and p95
per release at the edge, and the service's own figures, in the form graphite-web's UI saves."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from lab.stack import dashboard


def test_every_service_gets_requests_errors_p95_and_its_own_figures() -> None:
    state = dashboard.state(["app", "pypiserver"])
    graphs = state["graphs"]
    assert [g[0] for g in graphs] == [f"{s}-{i}" for s in ("app", "pypiserver") for i in range(4)]
    targets = {g[0]: g[2]["target"] for g in graphs}
    assert targets["pypiserver-0"] == ['groupByNode(edge.pypiserver.*.requests.*, 2, "sumSeries")']
    assert "edge.pypiserver.*.requests.{5xx,proxy}" in targets["pypiserver-1"][0]
    assert "edge.pypiserver.*.redispatched" in targets["pypiserver-1"][0]
    assert targets["pypiserver-2"] == ["aliasByNode(edge.pypiserver.*.latency.p95, 2)"]
    assert targets["app-3"] == ['groupByNode(cdlab.app.*.*.requests.*, 2, "sumSeries")']


def test_the_state_is_what_graphite_web_loads_and_renders() -> None:
    state = dashboard.state(["app"])
    assert state["name"] == dashboard.NAME
    assert state["timeConfig"]["relativeStartQuantity"] == "15"
    assert state["refreshConfig"] == {"enabled": True, "interval": 10_000}
    for _id, query, params, url in state["graphs"]:
        assert parse_qs(query)["target"] == params["target"]
        rendered = parse_qs(urlsplit(url).query)
        assert urlsplit(url).path == "/render" and rendered["target"] == params["target"]
        assert rendered["from"] == ["-15minutes"] and rendered["hideLegend"] == ["false"]
