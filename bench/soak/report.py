"""The soak's report: the outcomes by phase, the recovery after the heal, the checks, what failed.

``read_server_log`` places the sweeps and backend errors of the server log on the soak's
timeline; ``recovery`` finds when the cut was noticed and when the service was back;
``report`` turns all that and the counter check into the printed lines and the figures
(figures.json); ``failures`` lists the reasons the soak fails (none: it passed).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from checks import Check
from lib.stats import percentile
from users import FAILED, KIND_TITLES, KINDS, Stats, Users

PHASES = ("before", "outage", "after")
ROUTES = ("login", "incr", "read", "logout")


def read_server_log(path: Path, t0_wall: float, load: Users[Any]) -> dict[str, Any]:
    """Sweeps, backend errors and anything unexpected, placed on the soak's timeline."""
    phase = load.stats.phase
    info: dict[str, Any] = {
        "sweeps": Counter(),
        "swept_rows": Counter(),
        "sweep_failures": Counter(),
        "backend_errors": Counter(),
        "backend_causes": Counter(),
        "first_backend_error": None,
        "last_backend_error": None,
        "messages": Counter(),
        "tracebacks": 0,
        "worker_pids": set(),
    }

    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            info["tracebacks"] += 1
        parts = line.split(" ", 3)
        if len(parts) < 4 or not parts[1].isdigit():
            if "Exception in ASGI application" in line or line.startswith("ERROR"):
                info["messages"]["uvicorn: " + line[:80]] += 1
            continue
        try:
            t = float(parts[0]) - t0_wall
        except ValueError:
            continue
        info["worker_pids"].add(parts[1])
        level, message = parts[2], parts[3]
        if message.startswith("session sweep deleted"):
            info["sweeps"][phase(t)] += 1
            info["swept_rows"][phase(t)] += int(message.split()[3])
        elif message.startswith("session sweep failed"):
            info["sweep_failures"][phase(t)] += 1
        elif message.startswith("session backend error"):
            info["backend_errors"][phase(t)] += 1
            cause = " ".join(w for w in message[23:].split() if not any(c.isdigit() for c in w))
            info["backend_causes"][f"{phase(t)}: {cause[:90]}"] += 1
            if info["first_backend_error"] is None:
                info["first_backend_error"] = t
            info["last_backend_error"] = t
        else:
            key = f"{level} {message.split(':')[0][:60]}"
            key = " ".join(w for w in key.split() if not any(c.isdigit() for c in w))
            info["messages"][key] += 1
    return info


def recovery(stats: Stats, duration: float) -> dict[str, Any]:
    cut, heal = stats.cut, stats.heal
    assert cut is not None and heal is not None
    out: dict[str, Any] = {}
    fails_after_cut = [e for e, _, k, _ in stats.events if k in FAILED and e >= cut]
    out["detect"] = (min(fails_after_cut) - cut) if fails_after_cut else None
    writes = [
        e - heal
        for e, route, k, lat in stats.events
        if k == "ok" and route in ("incr", "login") and e - lat >= heal
    ]
    out["first_write"] = min(writes) if writes else None
    late = [e for e, _, k, _ in stats.events if k in FAILED and e >= heal]
    out["last_failure"] = (max(late) - heal) if late else None
    out["failures_after_heal"] = len(late)
    # Success rate per 1-s bucket (by completion time); "normal" = the pre-cut rate (at most
    # 99.9 %). Recovered = from the end of the last bucket after the heal below normal on,
    # through the end of the run.
    buckets: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for e, _, k, _ in stats.events:
        if k in FAILED:
            buckets[int(e)][1] += 1
        elif k in ("ok", "403"):
            buckets[int(e)][0] += 1
    warm = min(10, int(cut) // 2)
    base_ok = sum(buckets[s][0] for s in range(warm, int(cut)))
    base_all = base_ok + sum(buckets[s][1] for s in range(warm, int(cut)))
    baseline = base_ok / base_all if base_all else 1.0
    normal = min(baseline, 0.999)
    out["baseline"] = baseline
    out["normal"] = None

    def below(s: int) -> bool:
        ok, bad = buckets[s]
        return ok + bad > 0 and ok / (ok + bad) < normal

    bad = [s for s in range(int(heal), int(duration) + 1) if below(s)]
    if not bad:
        out["normal"] = 0.0
    elif bad[-1] < int(duration) - 2:
        out["normal"] = bad[-1] + 1 - heal
    out["timeline"] = [
        (s, buckets[s][0], buckets[s][1])
        for s in range(max(0, int(cut) - 3), min(int(duration), int(heal) + 8))
    ]
    out["later_dips"] = [(s, buckets[s][0], buckets[s][1]) for s in bad if s >= int(heal) + 8]
    return out


def worker_lines(stats: Stats) -> list[str]:
    """After the heal, worker by worker: did each one come back?"""
    lines = []
    for pid in sorted(stats.workers):
        if pid in ("?", "-"):
            continue
        ok = stats.by_worker[pid, "after", "ok"]
        failed = sum(stats.by_worker[pid, "after", k] for k in FAILED)
        first = stats.first_write_by_worker.get(pid)
        lines.append(
            f"    worker {pid} after heal: {ok} answered 2xx, {failed} failed; first write heal + "
            + ("never" if first is None else f"{first * 1000:.0f} ms")
        )
    return lines


def fmt_s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "never"
    return f"{value * 1000:.0f} ms" if unit == "ms" else f"{value:.1f} s"


def report(
    args: argparse.Namespace,
    load: Users[Any],
    check: Check,
    log: dict[str, Any],
    rec: dict[str, Any],
    packages: dict[str, str],
    cpu: dict[str, float],
) -> tuple[list[str], dict[str, Any]]:
    stats = load.stats
    cut, heal = stats.cut or 0.0, stats.heal or 0.0  # both set once the run is over
    events = stats.events
    served = [e for e in events if e[2] not in ("timeout", "connection")]
    by_phase: dict[str, Counter[str]] = {p: Counter() for p in PHASES}
    lat: dict[str, list[float]] = {p: [] for p in PHASES}
    for end, _, kind, latency in events:
        p = stats.phase(end)
        by_phase[p][kind] += 1
        if kind == "ok":
            lat[p].append(latency)
    spans = {"before": cut, "outage": heal - cut, "after": args.duration - heal}
    routes = Counter(route for _, route, kind, _ in served)
    lines = [
        f"asgi_mysql_session soak: {args.users} users for {args.duration:g} s, "
        f"uvicorn --workers {args.workers}, think {args.think[0]:g}-{args.think[1]:g} s",
        f"max_lifetime {args.max_lifetime} s, sweeps every {args.gc_interval:g} s, "
        f"timeout {args.db_timeout:g} s, connect_timeout {args.connect_timeout:g} s"
        + (", /incr serialized" if args.serialize else ""),
        f"fault: drop + {args.fault} at t={cut:.1f} s for {heal - cut:.1f} s (healed at t={heal:.1f} s)",
        f"{os.cpu_count()} cores; " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        "",
        f"requests served: {len(served)} ({len(served) / args.duration:.0f}/s); sent {len(events)}",
        "  by route: " + ", ".join(f"{r} {routes[r]}" for r in ROUTES),
        f"  by worker pid: {', '.join(f'{pid} {n}' for pid, n in sorted(stats.workers.items()))}",
        *worker_lines(stats),
        "  CPU (cores busy): "
        + ", ".join(f"{name} {value:.2f}" for name, value in cpu.items() if name != "cores")
        + f" of {cpu['cores']:.0f}; client event-loop lag p99 {percentile(stats.lag, 99) * 1000:.0f} ms, "
        f"max {max(stats.lag, default=0) * 1000:.0f} ms",
        "",
        f"{'outcome':40} {'before cut':>11} {'outage':>9} {'after heal':>11} {'total':>9}",
    ]
    for kind in KINDS:
        row = [by_phase[p][kind] for p in PHASES]
        lines.append(f"{KIND_TITLES[kind]:40} {row[0]:>11} {row[1]:>9} {row[2]:>11} {sum(row):>9}")
    if load.transport_errors:
        lines.append(
            "  connection errors: " + ", ".join(f"{k} {v}" for k, v in load.transport_errors.items())
        )
    rates = [sum(by_phase[p].values()) / max(spans[p], 1e-9) for p in PHASES]
    lines.append(f"{'requests/s':40} {rates[0]:>11.0f} {rates[1]:>9.0f} {rates[2]:>11.0f}")
    cells = [f"{percentile(lat[p], 50) * 1000:.0f}/{percentile(lat[p], 99) * 1000:.0f}" for p in PHASES]
    lines.append(f"{'2xx latency p50/p99 (ms)':40} {cells[0]:>11} {cells[1]:>9} {cells[2]:>11}")
    pings = stats.pings
    ping_out = [ok for t, ok in pings if cut <= t < heal]
    lines += [
        "",
        "recovery",
        f"  cut noticed (first failed request after the cut): {fmt_s(rec['detect'], 'ms')}",
        f"  first acknowledged session write started after heal: heal + {fmt_s(rec['first_write'], 'ms')}",
        f"  last failed request: heal + {fmt_s(rec['last_failure'])} ({rec['failures_after_heal']} failures "
        "completed after heal)",
        f"  success rate back to normal (>= {min(rec['baseline'], 0.999):.1%} in every second to the end): "
        f"heal + {fmt_s(rec['normal'])}",
        "  later seconds below normal (t: answered / failed): "
        + ("none" if not rec["later_dips"] else "  ".join(f"{s}:{ok}/{n}" for s, ok, n in rec["later_dips"])),
        f"  /ping (no session) during the outage: {sum(ping_out)}/{len(ping_out)} ok; "
        f"overall {sum(ok for _, ok in pings)}/{len(pings)}",
        "  per second around the cut (t: answered / failed): "
        + "  ".join(f"{s}:{ok}/{bad}" for s, ok, bad in rec["timeline"]),
        "",
        "sessions and sweeps",
        f"  logins acknowledged {stats.logins}, logouts {stats.logouts}, abandoned {stats.abandoned}, "
        f"expired while in use {stats.gone_expected}, logins unanswered {stats.login_uncertain}",
        f"  sweeps (server log): {sum(log['sweeps'].values())} deleting {sum(log['swept_rows'].values())} "
        f"expired rows (before cut {log['sweeps']['before']}/{log['swept_rows']['before']}, "
        f"after heal {log['sweeps']['after']}/{log['swept_rows']['after']}); "
        f"failed sweeps: {sum(log['sweep_failures'].values())} "
        f"(in the outage {log['sweep_failures']['outage']})",
        f"  backend errors logged: before {log['backend_errors']['before']}, outage "
        f"{log['backend_errors']['outage']}, after heal {log['backend_errors']['after']}; "
        f"tracebacks in the server log: {log['tracebacks']}",
    ]
    for cause, count in sorted(
        log["backend_causes"].items(), key=lambda kv: PHASES.index(kv[0].split(":")[0])
    ):
        lines.append(f"  backend error {count} x {cause}")
    for message, count in log["messages"].most_common(8):
        lines.append(f"  log: {count} x {message}")
    acked_total = sum(s.acked for s in load.sessions)
    ended = Counter(s.ended or "in use" for s in load.sessions)
    live_bad = sum(
        n
        for k, n in stats.violations.items()
        if "seen live" in k or k in ("read out of bounds", "counter went back")
    )
    lines += [
        "",
        f"counters: {acked_total} increments acknowledged in {len(load.sessions)} sessions "
        f"(at the end: {ended['in use']} in use, {ended['abandoned']} abandoned, "
        f"{ended['logout'] + ended['logout?']} logged out, {ended['gone']} expired in use)",
        f"  as they came: {stats.live_checked['incr']} /incr and {stats.live_checked['read']} /read answers "
        f"held to acknowledged <= n <= acknowledged + uncertain: {live_bad} out of bounds",
        "  every row read directly from MariaDB at the end:",
        f"    rows in the table: {check.rows} ({check.rows_live} unexpired)",
        f"    sessions verified: {check.verified_sessions}, "
        f"holding {check.verified_acked} acknowledged increments",
        f"      stored == acknowledged: {check.exact}; stored == acknowledged + some uncertain: "
        f"{check.with_uncertain_applied}",
        f"    lost acknowledged increments: {check.lost_increments} (in {check.lost_sessions} sessions); "
        f"phantom increments: {check.phantom_increments}",
        f"    uncertain increments (503/5xx/timeout/connection on /incr): {check.uncertain_total}, of which "
        f"{check.uncertain_applied} were found applied in verified rows",
        f"    logged-out sessions back in the table: {check.resurrected}; "
        f"live sessions missing: {check.vanished}",
        f"    expired and swept before the check (not verifiable): {check.expired_unverified} sessions, "
        f"{check.expired_unverified_acked} acknowledged increments",
        f"    rows no client knows (logins whose answer was lost): {check.orphans} "
        f"(<= {stats.login_uncertain} unanswered logins)",
    ]
    figures = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "packages": packages,
        "cpu": cpu,
        "client_lag_ms": {"p99": percentile(stats.lag, 99) * 1000, "max": max(stats.lag, default=0) * 1000},
        "served": len(served),
        "sent": len(events),
        "by_route": dict(routes),
        "by_worker": dict(stats.workers),
        "by_worker_phase_kind": {"/".join(k): v for k, v in stats.by_worker.items()},
        "first_write_by_worker": stats.first_write_by_worker,
        "by_phase": {p: dict(by_phase[p]) for p in PHASES},
        "latency_ms": {
            p: {"p50": percentile(lat[p], 50) * 1000, "p99": percentile(lat[p], 99) * 1000} for p in PHASES
        },
        "cut": cut,
        "heal": heal,
        "recovery": {k: v for k, v in rec.items() if k != "timeline"},
        "timeline": rec["timeline"],
        "sessions": {
            "logins": stats.logins,
            "logouts": stats.logouts,
            "abandoned": stats.abandoned,
            "expired_in_use": stats.gone_expected,
            "login_uncertain": stats.login_uncertain,
        },
        "sweeps": {k: dict(log[k]) for k in ("sweeps", "swept_rows", "sweep_failures", "backend_errors")},
        "log_messages": dict(log["messages"]),
        "backend_causes": dict(log["backend_causes"]),
        "tracebacks": log["tracebacks"],
        "check": vars(check),
        "acknowledged_total": acked_total,
        "sessions_total": len(load.sessions),
        "sessions_at_end": dict(ended),
        "live_checked": dict(stats.live_checked),
        "live_out_of_bounds": live_bad,
        "violations": dict(stats.violations),
        "examples": stats.examples,
        "proxy": stats.proxy_status,
        "transport_errors": dict(load.transport_errors),
    }
    return lines, figures


def failures(load: Users[Any], check: Check, rec: dict[str, Any], log: dict[str, Any]) -> list[str]:
    reasons = [f"{n} x {kind}" for kind, n in load.stats.violations.items()]
    if rec["first_write"] is None:
        reasons.append("no session write succeeded after the database came back")
    stuck = [
        pid
        for pid in load.stats.workers
        if pid not in ("?", "-") and pid not in load.stats.first_write_by_worker
    ]
    if stuck:
        reasons.append(f"worker(s) {', '.join(stuck)} never wrote a session after the heal")
    if rec["normal"] is None:
        reasons.append("the success rate never returned to normal after the heal")
    if check.verified_sessions == 0:
        reasons.append("no session could be verified against the table")
    errors = sum(n for m, n in log["messages"].items() if m.startswith(("ERROR", "uvicorn")))
    if errors or log["tracebacks"]:
        reasons.append(f"server logged {errors} errors and {log['tracebacks']} tracebacks")
    five = sum(1 for _, _, k, _ in load.stats.events if k == "5xx")
    if five:
        reasons.append(f"{five} answers with a 5xx other than 503")
    return reasons
