"""The report of bench/run.py: its targets judged, its tables printed and written, its chart drawn.

``report()`` takes the document run.py writes (bench/results/*.json) and prints the tables
and the targets; it writes the JSON, a Markdown copy and the PNG chart beside it (``run.py
--report FILE`` redraws a past run without measuring anything).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lib.apps import APP_TITLES
from lib.console import say
from lib.db import KINDS
from lib.report import md_table, text_table
from lib.stats import paired_ratio

#: The req/s the project must reach, as a share of the lean hand-written app's (issue 15).
LEAN_TARGETS = {"read": 1.0, "write": 0.95, "login": 0.95, "skip": 1.0}
#: The statements per request the project must stay within (SHOW GLOBAL STATUS deltas).
BUDGET = {
    "read": {"select": 1, "insert": 0, "update": 0, "delete": 0},
    "write": {"select": 1, "insert": 0, "update": 1, "delete": 0},
    "login": {"select": 0, "insert": 1, "update": 0, "delete": 0},
    "skip": {"select": 0, "insert": 0, "update": 0, "delete": 0},
}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    matrix = results["matrix"]
    for workload, apps in matrix.items():
        project, lean = apps.get("project"), apps.get("lean")
        if project is None:
            continue
        if lean is not None:
            share = LEAN_TARGETS[workload]
            pct = 100 * paired_ratio(project["rps_rounds"], lean["rps_rounds"])
            of_medians = 100 * project["rps"] / lean["rps"]
            out.append(
                {
                    "target": f"{workload}: req/s >= {share:.2f}x the hand-written app's",
                    "measured": f"{pct / 100:.3f}x (ratio of medians {of_medians / 100:.3f}x: "
                    f"{project['rps']:,.0f} vs {lean['rps']:,.0f})",
                    "met": pct >= 100 * share,
                }
            )
            if workload == "read" and results.get("coalesce", True):
                out.append(
                    {
                        "target": "read, coalesced: req/s >= 1.30x the hand-written app's",
                        "measured": f"{pct / 100:.3f}x",
                        "met": pct >= 130,
                    }
                )
            ratio = project["p99_ms"] / lean["p99_ms"]
            out.append(
                {
                    "target": f"{workload}: p99 <= 1.25x the hand-written app's",
                    "measured": f"{ratio:.2f}x ({project['p99_ms']:.1f} vs {lean['p99_ms']:.1f} ms)",
                    "met": ratio <= 1.25,
                }
            )
        per = project["statements_per_request"]
        budget = BUDGET[workload]
        shown = ", ".join(f"{per[k]:.2f} {k.upper()}" for k in KINDS if per[k] >= 0.005 or budget[k])
        want = " + ".join(f"{v} {k.upper()}" for k, v in budget.items() if v) or "0"
        note = " (skip route in exclude_paths)" if workload == "skip" else ""
        if workload in ("read", "write") and results.get("coalesce", True):
            # Coalesced reads: at most the budget, and below 0.5 SELECT per read at 32 connections.
            limit = 0.5 if workload == "read" else budget["select"]
            met = per["select"] < limit + (0 if workload == "read" else 0.05) and all(
                abs(per[k] - budget[k]) <= 0.05 for k in KINDS if k != "select"
            )
            out.append(
                {
                    "target": f"{workload}: statements/request <= {want}, coalesced: "
                    f"SELECT/request < {limit:g}"
                    if workload == "read"
                    else f"{workload}: statements/request <= {want} (reads coalesced)",
                    "measured": shown or "0",
                    "met": met,
                }
            )
            continue
        out.append(
            {
                "target": f"{workload}: statements/request = {want}{note}",
                "measured": shown or "0",
                "met": all(abs(per[k] - budget[k]) <= 0.05 for k in KINDS),
            }
        )
    sweep = results.get("sweep")
    if sweep:
        out.append(
            {
                "target": "read p99 during a sweep <= 2x quiet p99",
                "measured": f"{sweep['p99_ratio']:.2f}x ({sweep['during']['p99_ms']:.1f} vs "
                f"{sweep['quiet']['p99_ms']:.1f} ms)",
                "met": sweep["p99_ratio"] <= 2,
            }
        )
    scale = results.get("scale")
    if scale and "project" in scale["apps"]:
        project = scale["apps"]["project"]
        ratio = project["ratio"]
        measured = f"{100 * ratio:.1f}% (ratio of medians)"
        if scale.get("interleaved"):  # both sizes in every round: pairs, as for the apps
            ratio = paired_ratio(project["big"]["rps_rounds"], project["small"]["rps_rounds"])
            measured = f"{100 * ratio:.1f}% (ratio of medians {100 * project['ratio']:.1f}%)"
        out.append(
            {
                "target": f"read req/s with {scale['big']:,} sessions within 10% of {scale['small']:,}",
                "measured": measured,
                "met": ratio >= 0.9,
            }
        )
    return out


def matrix_rows(matrix: dict[str, Any]) -> list[list[str]]:
    rows = []
    for workload, apps in matrix.items():
        lean = apps.get("lean")
        for app, s in apps.items():
            per = s["statements_per_request"]
            pct = f"{s['rps'] / lean['rps']:.2f}x" if lean else "-"
            db_ms = s.get("db_ms_per_1000")
            rows.append(
                [
                    workload,
                    app,
                    f"{s['rps']:,.0f}",
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                    *(f"{per[k]:.2f}" for k in KINDS),
                    str(s["errors"]),
                    pct,
                    f"{db_ms:.0f}" if db_ms is not None else "-",
                    f"{s['cpu_cores']['server']:.2f}/{s['cpu_cores']['mariadb']:.2f}/"
                    f"{s['cpu_cores']['load_generator']:.2f}/{s['cpu_cores']['other']:.2f}",
                ]
            )
    return rows


HEADER = [
    "workload",
    "app",
    "req/s",
    "p50 ms",
    "p99 ms",
    "SELECT/req",
    "INSERT/req",
    "UPDATE/req",
    "DELETE/req",
    "errors",
    "x lean",
    "mariadbd ms/1k req",
    "CPU srv/db/wrk/other",
]


def scenario_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    sweep = results.get("sweep")
    if sweep:
        q, d = sweep["quiet"], sweep["during"]
        rows.append(
            [
                "sweep",
                "read, quiet (expired rows present)",
                f"{q['rps']:,.0f}",
                f"{q['p50_ms']:.2f}",
                f"{q['p99_ms']:.2f}",
                str(sum(q["errors"].values())),
            ]
        )
        rows.append(
            [
                "sweep",
                f"read during sweep of {sweep['rows_deleted']:,} rows in {sweep['seconds']:.1f}s "
                f"({sweep['rows_per_second']:,.0f} rows/s)",
                f"{d['rps']:,.0f}",
                f"{d['p50_ms']:.2f}",
                f"{d['p99_ms']:.2f}",
                str(sum(d["errors"].values())),
            ]
        )
    scale = results.get("scale")
    if scale:
        for app, r in scale["apps"].items():
            for size in ("small", "big"):
                s = r[size]
                rows.append(
                    [
                        "scale",
                        f"read {app}, {scale[size]:,} sessions",
                        f"{s['rps']:,.0f}",
                        f"{s['p50_ms']:.2f}",
                        f"{s['p99_ms']:.2f}",
                        str(s["errors"]),
                    ]
                )
    return rows


SCENARIO_HEADER = ["scenario", "what", "req/s", "p50 ms", "p99 ms", "errors"]


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("bench: matplotlib is not installed, no chart (pip install matplotlib)")
        return False
    matrix = results["matrix"]
    workloads = list(matrix)
    apps = list(next(iter(matrix.values())))
    colors = {"project": "#2b6cb0", "lean": "#2f855a", "raw": "#718096", "cookie": "#dd6b20"}
    fig, axes = plt.subplots(1, 4, figsize=(19, 5), gridspec_kw={"width_ratios": [3, 3, 2, 1.4]})
    width = 0.8 / len(apps)
    for ax, metric, title in (
        (axes[0], "rps", "requests/s (higher is better)"),
        (axes[1], "p99_ms", "p99 latency, ms (lower is better)"),
    ):
        for i, app in enumerate(apps):
            xs = [k + (i - (len(apps) - 1) / 2) * width for k in range(len(workloads))]
            values = [matrix[w][app][metric] for w in workloads]
            bars = ax.bar(xs, values, width, label=APP_TITLES[app], color=colors.get(app))
            if app == "project" and "lean" in apps:
                for bar, w in zip(bars, workloads, strict=True):
                    ratio = matrix[w]["project"][metric] / matrix[w]["lean"][metric]
                    ax.annotate(
                        f"{100 * ratio:.0f}%" if metric == "rps" else f"{ratio:.1f}x",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    sweep, scale = results.get("sweep"), results.get("scale")
    ax = axes[2]
    if scale:
        labels, values, tints = [], [], []
        for app, r in scale["apps"].items():
            labels += [f"{app}\n{scale['small']:,}", f"{app}\n{scale['big']:,}"]
            values += [r["small"]["rps"], r["big"]["rps"]]
            tints += [colors.get(app, "grey")] * 2
        ax.bar(range(len(values)), values, color=tints)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_title("scale: read req/s by live sessions")
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_axis_off()
    ax = axes[3]
    if sweep:
        values = [sweep["quiet"]["p99_ms"], sweep["during"]["p99_ms"]]
        ax.bar([0, 1], values, color=[colors["project"], "#c53030"])
        ax.set_xticks([0, 1], ["quiet", "during\nsweep"], fontsize=8)
        ax.set_title("sweep: read p99, ms", fontsize=10)
        ax.set_xlabel(
            f"{sweep['rows_deleted']:,} rows in {sweep['seconds']:.1f}s\n"
            f"({sweep['rows_per_second']:,.0f} rows/s)",
            fontsize=8,
        )
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_axis_off()
    fig.suptitle("asgi_mysql_session bench: uvicorn 1 worker (uvloop, httptools), medians of rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(doc: dict[str, Any], out: Path, *, write_json: bool = True) -> None:
    """Print the tables and targets; write the JSON, a Markdown copy and the chart."""
    config, results, info = doc["config"], doc["results"], doc["machine"]
    checks = doc["targets"] = targets(results)
    rows = matrix_rows(results["matrix"])
    say("\n" + text_table(HEADER, rows))
    srows = scenario_rows(results)
    if srows:
        say("\n" + text_table(SCENARIO_HEADER, srows))
    say("\ntargets:")
    for check in checks:
        say(f"  [{'met ' if check['met'] else 'MISS'}] {check['target']}: {check['measured']}")
    if write_json:
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [
        f"Run {doc['when']} at {info.get('revision', '?')}: {info['nproc']} x {info['cpu']}, "
        f"{info['memory_gib']} GiB, MariaDB {info['mariadb']['version']}, Python {info['python']}, "
        f"uvicorn {info['packages'].get('uvicorn')} "
        f"({_workers(config.get('workers', 1))}, uvloop, httptools), "
        f"load: {info['load_generator']}; pool {config['pool']}, {config['sessions']:,} "
        f"{config.get('session', 'login')} sessions, reads "
        f"{'coalesced' if config.get('coalesce', True) else 'one by one'}, "
        f"{config['rounds']} rounds x {config['duration']:g}s, medians.",
        "",
        md_table(HEADER, rows),
        "",
        md_table(SCENARIO_HEADER, srows) if srows else "",
        "",
        md_table(
            ["target", "measured", "met"],
            [[c["target"], c["measured"], "yes" if c["met"] else "**no**"] for c in checks],
        ),
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    drawn = chart(results, out.with_suffix(".png"))
    written = [
        out.with_suffix(x) for x in ([".json"] if write_json else []) + [".md"] + ([".png"] if drawn else [])
    ]
    say("\nwrote " + ", ".join(str(x) for x in written))


def _workers(count: int) -> str:
    return "1 worker" if count == 1 else f"{count} workers per app"
