"""The one client for graphite-web: deploy events on the graphs, and the figures the canary judge
and the bake window read, measured at the edge (the proxy, ``edge.<service>.<release>.*``: see
services/proxy/cdlab_proxy/edge.py), never what a release says about itself."""

from __future__ import annotations

import json

import requests

from lab.config import public_host, public_port
from lab.ports import proxy
from lab.release.judge import Sample

GRAPHITE_PORT = 8082  # graphite-web, published by prod (compose/stack.yml, topology)


def graphite_url() -> str:
    """graphite-web from here: this lab's workstation port for it (or prod's own, on a host)."""
    return f"http://{public_host()}:{public_port(GRAPHITE_PORT)}"


class Graphite:
    def __init__(self, url: str = "", timeout: float = 3.0) -> None:
        self.url, self.timeout = url or graphite_url(), timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the lab's own address only

    def event(self, what: str, tags: list[str], data: str = "") -> bool:
        """Annotate the graphs; best effort (a deploy never fails for want of an annotation).
        True when graphite-web stored it."""
        try:
            resp = self.session.post(
                f"{self.url}/events/",
                timeout=self.timeout,
                json={"what": what, "tags": tags, "data": data},
            )
        except requests.RequestException:
            return False
        return resp.status_code == 200

    def dashboard(self, name: str) -> dict[str, object] | None:
        """A saved dashboard's state, or None when there is none by that name."""
        resp = self.session.get(f"{self.url}/dashboard/load/{name}", timeout=self.timeout)
        resp.raise_for_status()
        state = resp.json().get("state")
        return state if isinstance(state, dict) else None

    def save_dashboard(self, name: str, state: dict[str, object]) -> str:
        """Save (or replace) a dashboard; its URL. graphite-web answers ``{"success": true}``."""
        resp = self.session.post(
            f"{self.url}/dashboard/save/{name}",
            timeout=self.timeout,
            data={"state": json.dumps(state)},
        )
        resp.raise_for_status()
        if not resp.json().get("success"):
            raise requests.RequestException(
                f"graphite-web did not save dashboard {name}: {resp.text}"
            )
        return self.dashboard_url(name)

    def dashboard_url(self, name: str) -> str:
        return f"{self.url}/dashboard/{name}"

    def events(self, tag: str, since: str = "-1h") -> list[dict[str, object]]:
        resp = self.session.get(
            f"{self.url}/events/get_data", timeout=self.timeout, params={"tags": tag, "from": since}
        )
        resp.raise_for_status()
        return list(resp.json())

    def points(self, target: str, span: tuple[str, str]) -> list[float]:
        resp = self.session.get(
            f"{self.url}/render",
            timeout=self.timeout,
            params={"target": target, "from": span[0], "until": span[1], "format": "json"},
        )
        resp.raise_for_status()
        doc = resp.json()
        return [float(v) for series in doc for v, _ in series["datapoints"] if v is not None]

    def series(
        self, targets: list[str], since: str = "-20s"
    ) -> list[tuple[str, list[tuple[float | None, int]]]]:
        """Every series ``targets`` match since ``since``: (name, [(value or None, unix
        time), ...]); one request."""
        resp = self.session.get(
            f"{self.url}/render",
            timeout=self.timeout,
            params={"target": targets, "from": since, "until": "now", "format": "json"},
        )
        resp.raise_for_status()
        return [(str(s["target"]), [(v, int(t)) for v, t in s["datapoints"]]) for s in resp.json()]

    def sample(
        self, service: str, release: str, seconds: int, until: float | None = None
    ) -> Sample:
        """``release``'s traffic at the edge over ``seconds`` (the last ones, or those before
        the epoch time ``until``): requests, errors (5xx, the proxy's errors for it, and
        requests that failed on it and were served by another) and mean p95 latency."""
        span = (
            (f"-{seconds}s", "now")
            if until is None
            else (str(int(until) - seconds), str(int(until)))
        )
        base = edge_path(service, release)
        redispatched = sum(self.points(f"{base}.redispatched", span))
        total = sum(self.points(f"sumSeries({base}.requests.*)", span)) + redispatched
        errors = sum(self.points(f"sumSeries({base}.requests.{{5xx,proxy}})", span))
        p95 = self.points(f"{base}.latency.p95", span)
        return Sample(total, errors + redispatched, sum(p95) / len(p95) if p95 else None)


def edge_path(service: str, release: str) -> str:
    """Where the proxy's figures of ``release`` are (``release`` may be a wildcard)."""
    return f"{proxy.module('edge').PREFIX}.{service}.{release}"
