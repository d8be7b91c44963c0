"""`make cluster-cost`: what the Galera cluster costs one app process, against the single server.

One uvicorn process (1 worker, bench/apps/project_app.py, the flags of bench/run.py) per
target, wrk (1 thread, 32 connections, bench/wrk/rotate.lua) on the read and write workloads
of bench/run.py over 10,000 pre-filled sessions:

* ``single``: the shared server (``MYSQL_URL``, default 127.0.0.1:3306);
* ``node1``: the local cluster's node 1 alone (single-host DSN);
* ``3-host``: the three-host DSN ``n1,n2,n3`` (first healthy host: every statement goes to
  node 1 too, plus the Galera checks of each new connection).

Cells are interleaved (single, node1, 3-host for read, then for write, the order rotated every
round), each 1 s of warm-up and ``--seconds`` measured, over ``--rounds`` rounds; the report
gives medians, the ratio to ``single`` (the median of the per-round ratios) and the statements
per request from the servers' ``Com_*`` counters (summed over the three nodes for the cluster
targets; on the shared server they also count its other clients). The cluster's ports and
folder follow CLUSTER_PORT_OFFSET and CLUSTER_DIR like scripts/cluster.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import cluster  # noqa: E402
from filldb import BenchTable, unique_table_name  # noqa: E402
from run import KINDS, Driver, Server, ensure_wrk, say  # noqa: E402

from asgi_mysql_session import ddl as session_ddl  # noqa: E402
from asgi_mysql_session import sql as session_sql  # noqa: E402

TARGETS = ("single", "node1", "3-host")
WORKLOADS = ("read", "write")


class ClusterCounters:
    """``Com_*`` summed over the three nodes (what Driver.run reads before and after a cell)."""

    def counters(self) -> dict[str, int]:
        total = dict.fromkeys(KINDS, 0)
        for n in cluster.NODES:
            conn = pymysql.connect(
                host="127.0.0.1", port=cluster.sql_port(n), user="root", password="", connect_timeout=5
            )
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SHOW GLOBAL STATUS WHERE Variable_name IN "
                        "('Com_select','Com_insert','Com_update','Com_delete')"
                    )
                    for name, value in cur.fetchall():
                        total[str(name)[4:].lower()] += int(value)
            finally:
                conn.close()
        return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def three_hosts() -> str:
    hosts = ",".join(f"127.0.0.1:{cluster.sql_port(n)}" for n in cluster.NODES)
    return f"mysql://root@{hosts}/{cluster.DATABASE}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--mysql-url", default=os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    p.add_argument("--json", type=Path, default=HERE / "results" / "cluster-cost.json")
    args = p.parse_args(argv)
    wrk = ensure_wrk(allow_install=True)
    if wrk is None:
        say("cluster-cost: wrk is needed (apt-get install wrk)")
        return 2
    cluster.start()
    work = Path(tempfile.mkdtemp(prefix="asgi-mysql-session-cluster-cost-"))
    name = unique_table_name("asgi_mysql_session_ccost")
    single = BenchTable(args.mysql_url, name)
    clustered = BenchTable(cluster.url(1), name)
    tables = [single, clustered]
    urls = {"single": args.mysql_url, "node1": cluster.url(1), "3-host": three_hosts()}
    cluster_ids = work / "ids-cluster.txt"
    ids = {"single": work / "ids-single.txt", "node1": cluster_ids, "3-host": cluster_ids}
    drivers = {
        "single": Driver(wrk, args.connections, 1, single),
        "node1": Driver(wrk, args.connections, 1, ClusterCounters()),  # type: ignore[arg-type]
        "3-host": Driver(wrk, args.connections, 1, ClusterCounters()),  # type: ignore[arg-type]
    }
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {t: {w: [] for w in WORKLOADS} for t in TARGETS}
    servers: list[Server] = []
    try:
        for table, file in ((single, ids["single"]), (clustered, ids["node1"])):
            table.create()
            table.fill(args.sessions, ids_file=file)
        clustered.query(session_ddl.create_lease_table(name))  # Galera: open() requires it
        say(f"cluster-cost: table {name}, {args.sessions} sessions on the single server and on the cluster")
        say(f"cluster-cost: {args.rounds} rounds x {len(TARGETS) * len(WORKLOADS)} cells x {args.seconds:g}s")
        for r in range(args.rounds):
            order = TARGETS[r % 3 :] + TARGETS[: r % 3]
            servers = []
            for target in TARGETS:
                env = {**os.environ, "BENCH_MYSQL_URL": urls[target], "BENCH_TABLE": name, "BENCH_POOL": "10"}
                servers.append(Server("project", free_port(), env, work, f"-{target}"))
            by_target = dict(zip(TARGETS, servers, strict=True))
            for server in servers:
                server.start()
            for workload in WORKLOADS:
                for target in order:
                    driver, server = drivers[target], by_target[target]
                    driver.run(server, f"/{workload}", ids[target], 1)  # warm-up
                    load, _ = driver.run(server, f"/{workload}", ids[target], args.seconds)
                    cell = load.as_dict()
                    cells[target][workload].append(cell)
                    per = cell["statements_per_request"]
                    say(
                        f"  round {r + 1} {workload:5} {target:6}: {load.rps:7.0f} req/s  "
                        f"p50 {load.p50_ms:5.1f} "
                        f"p99 {load.p99_ms:6.1f} ms  errors {load.error_count}  "
                        f"per request: {' '.join(f'{k} {v:.2f}' for k, v in per.items() if v)}"
                    )
            for server in servers:
                server.stop()
            servers = []
    finally:
        for server in servers:
            server.stop()
        for table in tables:
            table.drop()
        with contextlib.suppress(pymysql.MySQLError):
            clustered.query(f"DROP TABLE IF EXISTS `{session_sql.lease_table_name(name)}`")
        for table in tables:
            table.close()
    summary: dict[str, Any] = {}
    lines = [
        "| workload | target | req/s (median) | vs single | p50 / p99 ms "
        "| SELECT / INSERT / UPDATE / DELETE per request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        base = [c["rps"] for c in cells["single"][workload]]
        for target in TARGETS:
            runs = cells[target][workload]
            rps = [c["rps"] for c in runs]
            ratio = statistics.median(x / y for x, y in zip(rps, base, strict=True))
            per = {k: statistics.median(c["statements_per_request"][k] for c in runs) for k in KINDS}
            p50 = statistics.median(c["p50_ms"] for c in runs)
            p99 = statistics.median(c["p99_ms"] for c in runs)
            errors = sum(sum(c["errors"].values()) for c in runs)
            summary.setdefault(workload, {})[target] = {
                "rps": rps,
                "median_rps": statistics.median(rps),
                "ratio_to_single": round(ratio, 3),
                "statements_per_request": per,
                "p50_ms": p50,
                "p99_ms": p99,
                "errors": errors,
            }
            lines.append(
                f"| {workload} | {target} | {statistics.median(rps):,.0f} "
                f"({min(rps):,.0f}-{max(rps):,.0f}) | "
                f"{ratio:.2f} | {p50:.1f} / {p99:.1f} | {' / '.join(f'{per[k]:.2f}' for k in KINDS)} "
                f"| {errors} |"
            )
    say("")
    for line in lines:
        say(line)
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "args": {k: str(v) for k, v in vars(args).items()},
             "summary": summary, "cells": cells, "table_md": lines},
            indent=1,
        )
    )  # fmt: skip
    say(f"\ncluster-cost: figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
