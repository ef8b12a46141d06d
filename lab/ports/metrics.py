"""The one client for graphite-web: deploy events on the graphs (and, later, the canary judge's
reads through the render API)."""

from __future__ import annotations

import requests

from lab.config import public_host
from lab.release.judge import Sample

GRAPHITE_PORT = 8082  # graphite-web, published by prod (compose/stack.yml, topology)


class Graphite:
    def __init__(self, url: str = "", timeout: float = 3.0) -> None:
        self.url, self.timeout = url or f"http://{public_host()}:{GRAPHITE_PORT}", timeout
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

    def events(self, tag: str, since: str = "-1h") -> list[dict[str, object]]:
        resp = self.session.get(
            f"{self.url}/events/get_data", timeout=self.timeout, params={"tags": tag, "from": since}
        )
        resp.raise_for_status()
        return list(resp.json())

    def _sum(self, target: str, seconds: int) -> list[float]:
        resp = self.session.get(
            f"{self.url}/render",
            timeout=self.timeout,
            params={"target": target, "from": f"-{seconds}s", "format": "json"},
        )
        resp.raise_for_status()
        doc = resp.json()
        return [float(v) for series in doc for v, _ in series["datapoints"] if v is not None]

    def sample(self, service: str, release: str, seconds: int) -> Sample:
        """Requests, 5xx answers and mean p95 latency of ``release`` over the last ``seconds``."""
        base = f"cdlab.{service}.{release}.*"
        total = sum(self._sum(f"sumSeries({base}.requests.*)", seconds))
        errors = sum(self._sum(f"sumSeries({base}.requests.5xx)", seconds))
        p95 = self._sum(f"maxSeries({base}.latency.p95)", seconds)
        return Sample(total, errors, sum(p95) / len(p95) if p95 else None)
