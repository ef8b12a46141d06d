"""The bench's page: its table and one bar chart per scenario, as a single HTML file with inline
SVG (no plotting library), written beside the JSON results."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

WIDTH, ROW, LABEL = 860, 22, 330
GOOD, BAD, NEUTRAL = "#2ca02c", "#d62728", "#1f77b4"


def bars(title: str, rows: list[tuple[str, float, str, str]]) -> str:
    """A horizontal bar chart: (label, value, text shown after the bar, colour) per row."""
    top = max((v for _, v, _, _ in rows), default=0) or 1
    span = WIDTH - LABEL - 170
    height = ROW * len(rows) + 10
    out = [f'<h2>{html.escape(title)}</h2><svg width="{WIDTH}" height="{height}">']
    for i, (label, value, text, colour) in enumerate(rows):
        y = 5 + i * ROW
        w = max(1.0, span * value / top) if value else 0
        out += [
            f'<text x="{LABEL - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect x="{LABEL}" y="{y + 3}" width="{w:.1f}" height="{ROW - 6}" fill="{colour}"/>',
            f'<text x="{LABEL + w + 6:.1f}" y="{y + 15}">{html.escape(text)}</text>',
        ]
    return "\n".join([*out, "</svg>"])


def charts(results: dict[str, Any]) -> list[str]:
    out = []
    deploys = results.get("deploys") or []
    if deploys:
        out.append(
            bars(
                "Failed requests during deploys (share of all requests)",
                [
                    (
                        f"{d['strategy']} @ {d['rate']} req/s",
                        d["failed"] / d["total"] * 100 if d["total"] else 0,
                        f"{d['failed']} of {d['total']}",
                        GOOD if d["failed"] == 0 else BAD,
                    )
                    for d in deploys
                ],
            )
        )
    lt = results.get("lead_time") or {}
    if lt.get("stages"):
        out.append(
            bars(
                f"Lead time, code-only change: {lt['seconds']} s to 100 % live "
                f"(ratio {lt.get('ratio')} to the irreducible {lt.get('irreducible')} s)",
                [(name, s, f"{s} s", NEUTRAL) for name, s in lt["stages"].items()],
            )
        )
    rb = results.get("rollback") or {}
    if rb:
        out.append(
            bars(
                "Rollback: command to 100 % of responses from the previous release",
                [
                    (
                        "warm (kept running, drained)",
                        rb["warm_to_100_ms"],
                        f"{rb['warm_to_100_ms']} ms",
                        GOOD,
                    ),
                    (
                        "pruned (started from the registry)",
                        rb["pruned_command_s"] * 1000,
                        f"{rb['pruned_command_s']} s",
                        NEUTRAL,
                    ),
                ],
            )
        )
    px = results.get("proxy") or {}
    if "throughput_ratio" in px:
        out.append(
            bars(
                f"Proxy overhead: requests/s, same client (ratio {px['throughput_ratio']})",
                [
                    (
                        label,
                        px[key]["rps"],
                        f"{px[key]['rps']} req/s, p99 {px[key]['p99_ms']} ms",
                        NEUTRAL,
                    )
                    for label, key in (
                        ("through the proxy", "proxy"),
                        ("straight to a release", "direct"),
                    )
                ],
            )
        )
    return out


def write(path: Path, results: dict[str, Any], table: str) -> Path:
    quick = ", quick" if results["quick"] else ""
    title = f"cdlab bench {results['date']} (commit {results['commit']}{quick})"
    body = "\n".join(charts(results))
    path.write_text(
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:14px sans-serif;margin:2em}svg text{font:12px sans-serif}</style>"
        f"<h1>{html.escape(title)}</h1>{body}"
        f"<h2>Table</h2><pre>{html.escape(table)}</pre>"
        f"<p>Load client: {html.escape(results['load_client'])}. "
        f"{html.escape(results.get('swarm', ''))}.</p>\n"
    )
    return path
