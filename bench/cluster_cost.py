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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pymysql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

import cluster  # noqa: E402
from filldb import BenchTable, unique_table_name  # noqa: E402
from lib import MYSQL_URL, db  # noqa: E402
from lib.apps import Server  # noqa: E402
from lib.console import say  # noqa: E402
from lib.load import Driver, Load, ensure_wrk, summarize  # noqa: E402
from lib.procs import free_port  # noqa: E402
from lib.report import md_table  # noqa: E402
from lib.stats import paired_ratio  # noqa: E402

from asgi_mysql_session import ddl as session_ddl  # noqa: E402
from asgi_mysql_session import sql as session_sql  # noqa: E402

T = TypeVar("T")
TARGETS = ("single", "node1", "3-host")
WORKLOADS = ("read", "write")


class ClusterCounters:
    """The three nodes as one database for lib.load.Driver: ``Com_*`` summed, and their processes."""

    def per_node(self, read: Callable[[Any], T]) -> list[T]:
        found = []
        for n in cluster.NODES:
            conn = db.connect(cluster.url(n), connect_timeout=5)
            try:
                found.append(read(conn))
            finally:
                conn.close()
        return found

    def counters(self) -> dict[str, int]:
        nodes = self.per_node(db.com_counters)
        return {kind: sum(node[kind] for node in nodes) for kind in db.KINDS}

    def server_pids(self) -> list[int]:
        return [pid for pid in self.per_node(db.server_pid) if pid is not None]


def three_hosts() -> str:
    hosts = ",".join(f"127.0.0.1:{cluster.sql_port(n)}" for n in cluster.NODES)
    return f"mysql://root@{hosts}/{cluster.DATABASE}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--mysql-url", default=MYSQL_URL)
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
        "node1": Driver(wrk, args.connections, 1, ClusterCounters()),
        "3-host": Driver(wrk, args.connections, 1, ClusterCounters()),
    }
    cells: dict[str, dict[str, list[Load]]] = {t: {w: [] for w in WORKLOADS} for t in TARGETS}
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
                    cells[target][workload].append(load)
                    per = load.as_dict()["statements_per_request"]
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
    header = ["workload", "target", "req/s (median)", "vs single", "p50 / p99 ms"]
    header += ["SELECT / INSERT / UPDATE / DELETE per request", "errors"]
    rows = []
    for workload in WORKLOADS:
        base = summarize(cells["single"][workload])["rps_rounds"]
        for target in TARGETS:
            s = summarize(cells[target][workload])
            rps, per = s["rps_rounds"], s["statements_per_request"]
            ratio = paired_ratio(rps, base)
            summary.setdefault(workload, {})[target] = {
                "rps": rps,
                "median_rps": s["rps"],
                "ratio_to_single": round(ratio, 3),
                "statements_per_request": per,
                "p50_ms": s["p50_ms"],
                "p99_ms": s["p99_ms"],
                "errors": s["errors"],
            }
            rows.append(
                [
                    workload,
                    target,
                    f"{s['rps']:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})",
                    f"{ratio:.2f}",
                    f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}",
                    " / ".join(f"{per[k]:.2f}" for k in db.KINDS),
                    str(s["errors"]),
                ]
            )
    lines = md_table(header, rows).split("\n")
    say("")
    for line in lines:
        say(line)
    figures = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
        "cells": {t: {w: [x.as_dict() for x in runs] for w, runs in c.items()} for t, c in cells.items()},
        "table_md": lines,
    }
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    say(f"\ncluster-cost: figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
