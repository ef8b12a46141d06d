"""A load run's page: requests per second (answered / failed), p50/p99 latency and the share of
each release per second, with the deploy, switch and rollback moments marked. One HTML file
with inline SVG (no plotting library), plus the summary as JSON beside it."""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from lab.proof.load import Traffic, percentile

W, H, PAD = 900, 180, 40
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


@dataclass(frozen=True)
class Second:
    second: int
    ok: int
    failed: int
    p50: float
    p99: float
    releases: dict[str, int]


def per_second(traffic: Traffic) -> list[Second]:
    """One row per second of the run (pure)."""
    lat: dict[int, list[float]] = defaultdict(list)
    bad: Counter[int] = Counter()
    share: dict[int, Counter[str]] = defaultdict(Counter)
    for r in traffic.requests:
        sec = int(r.t - traffic.started)
        if r.ok:
            lat[sec].append(r.ms)
            share[sec][r.release] += 1
        else:
            bad[sec] += 1
    return [
        Second(
            sec,
            len(lat[sec]),
            bad[sec],
            percentile(lat[sec], 50),
            percentile(lat[sec], 99),
            dict(share[sec]),
        )
        for sec in range(int(traffic.seconds) + 1)
    ]


def _chart(
    title: str,
    series: dict[str, list[float]],
    marks: list[tuple[float, str]],
    seconds: float,
    colours: dict[str, str],
) -> str:
    top = max([max(v, default=0) for v in series.values()] + [1])
    n = max(1, int(seconds))

    def x(sec: float) -> float:
        return PAD + (W - 2 * PAD) * sec / n

    def y(value: float) -> float:
        return H - PAD + 10 - (H - PAD) * value / top

    parts = [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{PAD}" y="14" font-size="13">{html.escape(title)} (max {top:.0f})</text>',
        f'<line x1="{PAD}" y1="{y(0)}" x2="{W - PAD}" y2="{y(0)}" stroke="#999"/>',
    ]
    for t, label in marks:
        parts.append(
            f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{y(0)}" '
            f'stroke="#d62728" stroke-dasharray="3,3"><title>{html.escape(label)}'
            "</title></line>"
        )
    for name, values in series.items():
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{colours[name]}" stroke-width="1.5" '
            f'points="{points}"><title>{html.escape(name)}</title></polyline>'
        )
    legend = " ".join(f'<tspan fill="{colours[k]}">■ {html.escape(k)}</tspan>' for k in series)
    parts.append(f'<text x="{W - PAD - 420}" y="14" font-size="12">{legend}</text></svg>')
    return "\n".join(parts)


def write(traffic: Traffic, directory: Path, extra: dict[str, object] | None = None) -> Path:
    """``<name>.html`` and ``<name>.summary.json`` in ``directory``; returns the page.
    ``extra`` (deploys made, controls...) joins the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = per_second(traffic)
    summary = {**traffic.summary(), **(extra or {})}
    marks = [(t - traffic.started, label) for t, label in traffic.marks]
    releases = sorted({r for row in rows for r in row.releases})
    colours = {"answered": "#2ca02c", "failed": "#d62728", "p50": "#1f77b4", "p99": "#ff7f0e"}
    colours.update({r: COLOURS[i % len(COLOURS)] for i, r in enumerate(releases)})
    per_release = {
        rel: [100.0 * r.releases.get(rel, 0) / max(1, r.ok) for r in rows] for rel in releases
    }
    charts = [
        _chart(
            "requests per second",
            {"answered": [float(r.ok) for r in rows], "failed": [float(r.failed) for r in rows]},
            marks,
            traffic.seconds,
            colours,
        ),
        _chart(
            "latency, ms",
            {"p50": [r.p50 for r in rows], "p99": [r.p99 for r in rows]},
            marks,
            traffic.seconds,
            colours,
        ),
        _chart("share of answers per release, %", per_release, marks, traffic.seconds, colours),
    ]
    marks_html = "".join(f"<li>{t:.1f} s: {html.escape(label)}</li>" for t, label in marks)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>cdlab load: {html.escape(traffic.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f5f5f5;padding:1em}}</style>
</head><body><h1>{html.escape(traffic.name)}</h1>
<p>{summary["total"]} requests in {summary["seconds"]} s at {traffic.rate:.0f} req/s asked
({summary["achieved_rate"]} req/s achieved); <b>{summary["failed"]} failed</b>; longest gap
between successes {summary["longest_gap_ms"]} ms; p99 {summary["p99_ms"]} ms.</p>
{"".join(f"<div>{c}</div>" for c in charts)}
<h2>Moments</h2><ul>{marks_html}</ul>
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
<p>Every request: <code>{html.escape(traffic.file.name)}</code> (JSON lines).</p>
</body></html>
"""
    out = directory / f"{traffic.name}.html"
    out.write_text(page)
    (directory / f"{traffic.name}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out
