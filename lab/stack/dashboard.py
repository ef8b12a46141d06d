"""The saved graphite-web dashboard ``lab.up`` opens on (pure): per service, requests, errors and
p95 latency per release as the proxy measured them (``edge.*``), and beside them what the
service reports about itself (``cdlab.*``, an application-level extra), over the last 15
minutes, refreshed every 10 seconds."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from lab.ports import metrics

NAME = "cdlab"
WIDTH, HEIGHT = 520, 260
REFRESH_MS = 10_000
SPAN = {"from": "-15minutes", "until": "now"}


def graphs(service: str) -> list[tuple[str, list[str]]]:
    """A service's graphs: (title, Graphite targets), one series per release."""
    edge = metrics.edge_path(service, "*")
    return [
        (
            f"{service}: requests/s per release (at the proxy)",
            [f'groupByNode({edge}.requests.*, 2, "sumSeries")'],
        ),
        (
            f"{service}: errors/s per release (5xx, proxy errors, redispatched)",
            [
                f"groupByNode(group({edge}.requests.{{5xx,proxy}}, {edge}.redispatched), "
                '2, "sumSeries")'
            ],
        ),
        (f"{service}: p95 ms per release (at the proxy)", [f"aliasByNode({edge}.latency.p95, 2)"]),
        (
            f"{service}: requests/s per release, as the service reports them (if it does)",
            [f'groupByNode(cdlab.{service}.*.*.requests.*, 2, "sumSeries")'],
        ),
    ]


def state(services: list[str]) -> dict[str, Any]:
    """The dashboard as graphite-web's dashboard UI saves it (``getState`` in its
    dashboard.js): graphs are ``[id, target query, params, render url]``."""
    rows = []
    for service in services:
        for i, (title, targets) in enumerate(graphs(service)):
            params = {
                **SPAN,
                "target": targets,
                "title": title,
                "width": WIDTH,
                "height": HEIGHT,
                "hideLegend": "false",  # which release is which line (graphite hides it when small)
            }
            query = urlencode([("target", t) for t in targets])
            url = "/render?" + urlencode([*((k, v) for k, v in params.items() if k != "target")])
            rows.append([f"{service}-{i}", query, params, f"{url}&{query}"])
    return {
        "name": NAME,
        "timeConfig": {
            "type": "relative",
            "relativeStartQuantity": "15",
            "relativeStartUnits": "minutes",
            "relativeUntilQuantity": "",
            "relativeUntilUnits": "now",
        },
        "refreshConfig": {"enabled": True, "interval": REFRESH_MS},
        "graphSize": {"width": WIDTH, "height": HEIGHT},
        "defaultGraphParams": {**SPAN, "width": WIDTH, "height": HEIGHT},
        "graphs": rows,
    }
