#!/usr/bin/env python3
"""Draws scripts/compare.sh's results: throughput and p99 latency against clients for each
system, SET and GET side by side, as one SVG (Python standard library only).

Usage:
  scripts/chart.py RESULTS.csv [OUT.svg]   write the chart (default docs/compare.svg)
  scripts/chart.py RESULTS.csv --table     print the markdown table and kv's ratios
"""

import csv
import math
import sys

SYSTEMS = ("redis", "etcd", "kv", "kvlease")
NAMES = {
    "redis": "Redis (appendfsync always)",
    "etcd": "etcd (3 members)",
    "kv": "kv (3 nodes)",
    "kvlease": "kv, read leases (3 nodes)",
}
COLOURS = {"redis": "#d62728", "etcd": "#1f77b4", "kv": "#2ca02c", "kvlease": "#9467bd"}
KVS = ("kv", "kvlease")
OPS = ("SET", "GET")

PANEL_W, PANEL_H = 380, 230  # plot area of one panel, in pixels
MARGIN_L, MARGIN_T, GAP_X, GAP_Y = 84, 50, 100, 80


def load(path):
    rows = list(csv.DictReader(open(path)))
    cells = {(r["system"], r["op"], int(r["clients"])): r for r in rows}
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    return cells, systems


def table(cells, systems):
    head = [NAMES[s] + " ops/s (p50 / p99 / p999 ms)" for s in systems]
    print("| op | clients | " + " | ".join(head) + " |")
    print("| --- | ---: |" + " ---: |" * len(systems))
    for op in OPS:
        for clients in sorted({k[2] for k in cells if k[1] == op}):
            out = []
            for s in systems:
                r = cells.get((s, op, clients))
                out.append("" if r is None else "%s (%s / %s / %s)" % (
                    format(round(float(r["ops_per_s"])), ","),
                    r["p50_ms"], r["p99_ms"], r["p999_ms"]))
            print(f"| {op} | {clients} | " + " | ".join(out) + " |")
    print()
    for op in OPS:
        for clients in sorted({k[2] for k in cells if k[1] == op}):
            for kv in KVS:
                mine = cells.get((kv, op, clients))
                for other in ("redis", "etcd"):
                    theirs = cells.get((other, op, clients))
                    if mine and theirs and float(theirs["ops_per_s"]) > 0:
                        ratio = float(mine["ops_per_s"]) / float(theirs["ops_per_s"])
                        print(f"{kv} / {other} {op} at {clients} clients: {ratio:.2f}x")


def nice_max(value):
    """The smallest 1, 2 or 5 times a power of ten at or above value."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def panel(out, x0, y0, title, clients, series, y_label, y_max):
    """One line chart: series maps system -> [(clients, value)]; x is log-scaled."""
    lo, hi = math.log10(min(clients)), math.log10(max(clients))
    span = (hi - lo) or 1.0

    def px(c):
        return x0 + (math.log10(c) - lo) / span * PANEL_W

    def py(v):
        return y0 + PANEL_H - v / y_max * PANEL_H

    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 - 14}" text-anchor="middle" '
               f'font-weight="bold">{title}</text>')
    for i in range(6):
        v = y_max * i / 5
        y = py(v)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" '
                   f'stroke="#ddd"/>')
        label = f"{v:,.0f}" if y_max >= 10 else f"{v:g}"
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for c in clients:
        x = px(c)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + PANEL_H}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + PANEL_H + 16}" text-anchor="middle">{c}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" '
               f'fill="none" stroke="#888"/>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + PANEL_H + 34}" '
               f'text-anchor="middle">clients</text>')
    out.append(f'<text transform="translate({x0 - 64},{y0 + PANEL_H / 2}) rotate(-90)" '
               f'text-anchor="middle">{y_label}</text>')
    for system, points in series.items():
        path = " ".join(f"{px(c):.1f},{py(min(v, y_max)):.1f}" for c, v in points)
        colour = COLOURS[system]
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"/>')
        for c, v in points:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(min(v, y_max)):.1f}" r="3" '
                       f'fill="{colour}"/>')


def chart(cells, systems):
    clients = sorted({k[2] for k in cells})
    width = MARGIN_L + 2 * PANEL_W + GAP_X + 30
    height = MARGIN_T + 2 * PANEL_H + GAP_Y + 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for column, op in enumerate(OPS):
        x0 = MARGIN_L + column * (PANEL_W + GAP_X)
        for row, (field, label, title) in enumerate((
                ("ops_per_s", "ops/s", f"{op} throughput"),
                ("p99_ms", "p99 latency (ms)", f"{op} p99 latency"))):
            series = {s: [(c, float(cells[(s, op, c)][field])) for c in clients
                          if (s, op, c) in cells] for s in systems}
            top = max((v for points in series.values() for _, v in points), default=1.0)
            y0 = MARGIN_T + row * (PANEL_H + GAP_Y)
            panel(out, x0, y0, title, clients, series, label, nice_max(top))
    legend_y = height - 12
    for i, s in enumerate(systems):
        x = MARGIN_L + i * 220
        out.append(f'<line x1="{x}" y1="{legend_y - 4}" x2="{x + 24}" y2="{legend_y - 4}" '
                   f'stroke="{COLOURS[s]}" stroke-width="3"/>')
        out.append(f'<text x="{x + 30}" y="{legend_y}">{NAMES[s]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    cells, systems = load(argv[1])
    if argv[2:3] == ["--table"]:
        table(cells, systems)
        return 0
    target = argv[2] if len(argv) > 2 else "docs/compare.svg"
    with open(target, "w") as f:
        f.write(chart(cells, systems))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
