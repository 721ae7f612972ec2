"""The load test's outputs: a table on stdout, ``loadtest-<timestamp>.csv`` (one row per
request, the level's aggregate repeated on each row) and ``loadtest-<timestamp>.html``
(self-contained: inline SVG charts of tokens/s, latency and GPU use against concurrency, the
table, the verdict).
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from monitoring.loadtest.driver import LoadTestResult, RequestResult
from monitoring.loadtest.verdict import HEURISTIC, LevelSummary, fmt

# --------------------------------------------------------------------------- table and CSV

TABLE_HEAD = [
    "conc.",
    "ok",
    "wall s",
    "agg. tok/s",
    "tok/s p50 (min-max)",
    "TTFT p50/p95 s",
    "queue p50/max s",
    "in flight",
    "reloads",
    "GPU mem MB (%)",
    "GPU util %",
    "GPU delta MB",
]


def table_rows(levels: Sequence[LevelSummary]) -> list[list[str]]:
    rows = []
    for lv in levels:
        gpu_mem = "-"
        if lv.gpu_memory_used_mb_max is not None:
            share = (
                f" ({lv.gpu_memory_fraction_max:.0%})"
                if lv.gpu_memory_fraction_max is not None
                else ""
            )
            gpu_mem = f"{lv.gpu_memory_used_mb_max:,.0f}{share}"
        rows.append(
            [
                str(lv.concurrency),
                f"{lv.ok}/{lv.requests}",
                fmt(lv.wall_seconds, 2),
                fmt(lv.aggregate_tokens_per_second),
                f"{fmt(lv.per_request_tps_p50)} ({fmt(lv.per_request_tps_min)}-"
                f"{fmt(lv.per_request_tps_max)})",
                f"{fmt(lv.ttft_p50, 3)}/{fmt(lv.ttft_p95, 3)}",
                f"{fmt(lv.queue_wait_p50, 3)}/{fmt(lv.queue_wait_max, 3)}",
                "-" if lv.max_in_flight is None else str(lv.max_in_flight),
                str(lv.reloads),
                gpu_mem,
                fmt(lv.gpu_utilization_after_avg, 0),
                fmt(lv.gpu_memory_delta_avg),
            ]
        )
    return rows


def format_table(levels: Sequence[LevelSummary]) -> str:
    rows = [TABLE_HEAD, *table_rows(levels)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEAD))]
    return "\n".join("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows)


def format_report(result: LoadTestResult) -> str:
    lines = ["", format_table(result.levels), ""]
    lines += result.verdict
    for lv in result.levels:
        if lv.errors:
            lines.append(f"concurrency {lv.concurrency}: {lv.failed} failed, e.g. {lv.errors[0]}")
    lines += result.hints
    lines += ["", HEURISTIC]
    return "\n".join(lines)


CSV_COLUMNS = [f.name for f in fields(RequestResult)]
LEVEL_COLUMNS = ["level_aggregate_tokens_per_second", "level_wall_seconds"]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def write_csv(result: LoadTestResult, path: Path) -> Path:
    by_level = {lv.concurrency: lv for lv in result.levels}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["run", "model", *CSV_COLUMNS, *LEVEL_COLUMNS])
        writer.writeheader()
        for request in result.requests:
            level = by_level[request.level]
            row = {name: _cell(value) for name, value in asdict(request).items()}
            row.update(
                run=result.stamp,
                model=result.config.model,
                level_aggregate_tokens_per_second=_cell(level.aggregate_tokens_per_second),
                level_wall_seconds=_cell(level.wall_seconds),
            )
            writer.writerow(row)
    return path


# ---- the HTML chart: inline SVG, no external assets

COLORS = ["#2f6feb", "#d9480f", "#2b8a3e", "#9c36b5"]
W, H = 520, 260
ML, MR, MT, MB = 60, 16, 16, 40


def _nice_max(value: float) -> float:
    """A round axis top a little above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    target = value * 1.1
    magnitude = 10 ** math.floor(math.log10(target))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if target <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def svg_chart(
    title: str,
    unit: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    dots: Sequence[tuple[int, float]] = (),
    fixed_max: float | None = None,
) -> str:
    """A line chart against the concurrency levels (evenly spaced), with optional dots (one per
    request at its level)."""
    values = [v for _label, vs in series for v in vs if v is not None] + [v for _i, v in dots]
    y_max = fixed_max or _nice_max(max(values, default=0.0))
    plot_w, plot_h = W - ML - MR, H - MT - MB
    n = max(len(x_labels), 1)

    def x(i: float) -> float:
        return ML + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return MT + plot_h - min(v, y_max) / y_max * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{html.escape(title)}">'
    ]
    for k in range(5):
        v = y_max * k / 4
        out.append(
            f'<line x1="{ML}" x2="{W - MR}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{ML - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{fmt(v, 1 if v < 10 else 0)}'
            "</text>"
        )
    for i, label in enumerate(x_labels):
        out.append(
            f'<text x="{x(i):.1f}" y="{H - MB + 16}" text-anchor="middle">{html.escape(label)}'
            "</text>"
        )
    out.append(
        f'<text x="{ML + plot_w / 2:.1f}" y="{H - 6}" text-anchor="middle">concurrency</text>'
        f'<text x="12" y="{MT + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {MT + plot_h / 2:.1f})">{html.escape(unit)}</text>'
    )
    for i, v in dots:
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" class="dot"/>')
    for s, (_label, vs) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        path = ""
        pen = "M"
        for i, value in enumerate(vs):
            if value is None:
                pen = "M"
                continue
            path += f"{pen}{x(i):.1f} {y(value):.1f} "
            pen = "L"
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3.5" fill="{color}"/>')
        if path:
            out.append(f'<path d="{path.strip()}" stroke="{color}" class="line"/>')
    out.append("</svg>")
    legend = "".join(
        f'<li><span style="background:{COLORS[s % len(COLORS)]}"></span>{html.escape(label)}</li>'
        for s, (label, _vs) in enumerate(series)
    )
    if dots:
        legend += '<li><span class="dotkey"></span>each request</li>'
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(out)}"
        f'<ul class="legend">{legend}</ul></figure>'
    )


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1140px;
       color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.4rem; } .muted { color: #656d76; }
.verdict { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 8px;
           padding: .8rem 1rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 8px; padding: .6rem; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
svg text { font-size: 11px; fill: #656d76; }
svg .grid { stroke: #eaeef2; } svg .line { fill: none; stroke-width: 2; }
svg .dot { fill: #8c959f; fill-opacity: .55; }
.legend { list-style: none; display: flex; gap: 1rem; padding: 0; margin: .3rem 0 0;
          font-size: .85rem; }
.legend span { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
               margin-right: .3rem; vertical-align: -1px; }
.legend .dotkey { background: #8c959f; border-radius: 50%; }
table { border-collapse: collapse; font-size: .85rem; margin: 1rem 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3rem .5rem; text-align: right; }
th { background: #f6f8fa; } pre { white-space: pre-wrap; font-size: .85rem; }
"""


def render_html(result: LoadTestResult) -> str:
    levels = result.levels
    labels = [str(lv.concurrency) for lv in levels]
    position = {lv.concurrency: i for i, lv in enumerate(levels)}
    good = [r for r in result.requests if r.ok]
    charts = [
        svg_chart(
            "Tokens/s: per request and aggregate",
            "tokens/s",
            labels,
            [
                ("per request, median", [lv.per_request_tps_p50 for lv in levels]),
                (
                    "aggregate (all tokens / wall time)",
                    [lv.aggregate_tokens_per_second for lv in levels],
                ),
            ],
            dots=[
                (position[r.level], r.tokens_per_second)
                for r in good
                if r.tokens_per_second is not None
            ],
        ),
        svg_chart(
            "Latency: time to first token and queue wait",
            "seconds",
            labels,
            [
                ("TTFT median", [lv.ttft_p50 for lv in levels]),
                ("TTFT p95", [lv.ttft_p95 for lv in levels]),
                ("queue wait median", [lv.queue_wait_p50 for lv in levels]),
            ],
        ),
    ]
    if any(lv.gpu_count for lv in levels):
        charts.append(
            svg_chart(
                "GPU: memory used (peak, % of total) and utilisation after each request",
                "%",
                labels,
                [
                    (
                        "memory used, peak %",
                        [
                            None
                            if lv.gpu_memory_fraction_max is None
                            else lv.gpu_memory_fraction_max * 100
                            for lv in levels
                        ],
                    ),
                    (
                        "utilisation after, average %",
                        [lv.gpu_utilization_after_avg for lv in levels],
                    ),
                ],
                fixed_max=100.0,
            )
        )
    else:
        charts.append(
            '<figure><figcaption>GPU</figcaption><p class="muted">No GPU figures: no NVIDIA GPU '
            "or driver visible on the gateway's machine.</p></figure>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEAD)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in table_rows(levels)
    )
    config = result.config
    verdict = "".join(f"<p>{html.escape(line)}</p>" for line in result.verdict + result.hints)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Load test {html.escape(config.model)} {result.stamp}</title>
<style>{STYLE}</style></head>
<body>
<h1>Load test: {html.escape(config.model)}</h1>
<p class="muted">{html.escape(config.url)} · started {result.started_at:%Y-%m-%d %H:%M:%S} UTC ·
concurrency {html.escape(",".join(labels))} · {config.requests} requests per level ·
max_tokens {config.max_tokens or "unlimited"} · {len(result.requests)} requests,
{result.failed} failed</p>
<div class="verdict">{verdict}</div>
<div class="charts">{"".join(charts)}</div>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<pre>{html.escape(HEURISTIC)}</pre>
</body></html>
"""


def write_html(result: LoadTestResult, path: Path) -> Path:
    path.write_text(render_html(result), encoding="utf-8")
    return path
