"""The one client for graphite-web: deploy events on the graphs (and, later, the canary judge's
reads through the render API)."""

from __future__ import annotations

import requests

GRAPHITE = "http://127.0.0.1:8082"


class Graphite:
    def __init__(self, url: str = GRAPHITE, timeout: float = 3.0) -> None:
        self.url, self.timeout = url, timeout
        self.session = requests.Session()
        self.session.trust_env = False  # 127.0.0.1 only

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
