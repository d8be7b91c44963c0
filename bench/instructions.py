"""Instructions per request of the bench apps, counted by valgrind (deterministic, unlike time).

    .venv/bin/python bench/instructions.py                       # project and raw, every workload
    .venv/bin/python bench/instructions.py --apps project --workloads write --concurrency 32
    .venv/bin/python bench/instructions.py --session cart --jobs 2   # 8 KB carts, 2 cells at once

On a shared VM CPU time per request moves by tens of percent from run to run; instruction
counts do not. Each app's ASGI callable is driven in-process exactly as ``bench/cpu.py`` does
(no HTTP server), once with N and once with 2N requests under ``valgrind --tool=callgrind``;
the difference divided by N is what one request costs, start-up and warm-up excluded. It
needs valgrind (Debian's package) and takes about a minute per cell; ``--jobs`` runs cells
side by side (counts do not depend on load). The session shape is ``--session`` (login: the
realistic login session, the default; one: one key; cart: an 8 KB cart), see bench/filldb.py.
The ``statements`` line of each cell is the provider's SELECTs per request, when it has one.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once() -> None:
    """Child mode (under valgrind): fill a table, drive one app and workload, drop the table."""
    sys.path.insert(0, str(HERE))
    import cpu
    from filldb import BenchTable, unique_table_name
    from lib import MYSQL_URL, run_async
    from lib.apps import APP_MODULES

    app, workload, count, concurrency = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    table_name = unique_table_name("asgi_mysql_session_bench_instr")
    os.environ["BENCH_TABLE"] = table_name
    table = BenchTable(MYSQL_URL, table_name)
    table.create()
    try:
        ids = table.fill(10_000)  # concurrent writes to one session would be 409s in the raw app
        args = argparse.Namespace(requests=count, concurrency=concurrency, profile=False, top=0)
        run_async(cpu.measure(app, workload, ids, [], args))
        provider = getattr(sys.modules.get(APP_MODULES[app]), "provider", None)
        if provider is not None:  # 1000 warm-up requests + the measured ones
            print(f"SELECTS {provider.statements['select']} {count + 1000}", file=sys.stderr)
    finally:
        table.drop()
        table.close()


def collected(app: str, workload: str, count: int, concurrency: int) -> tuple[int, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
            sys.executable, __file__, "--child", app, workload, str(count), str(concurrency),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{app} {workload}: the run failed:\n{done.stderr[-2000:]}")
    selects = re.search(r"SELECTS (\d+) (\d+)", done.stderr)
    return int(found.group(1)), (int(selects.group(1)) / int(selects.group(2)) if selects else None)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_once()
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", default="project,lean")
    p.add_argument("--workloads", default="read,write,login,skip")
    p.add_argument("--requests", type=int, default=2000, help="N: runs of N and 2N requests")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--session", choices=("login", "one", "cart"), default="login")
    p.add_argument("--jobs", type=int, default=1, help="cells measured at once")
    args = p.parse_args()
    os.environ["BENCH_SESSION"] = args.session

    def cell(workload: str, app: str) -> str:
        small, _ = collected(app, workload, args.requests, args.concurrency)
        big, selects = collected(app, workload, 2 * args.requests, args.concurrency)
        per_request = (big - small) // args.requests
        extra = f"  ({selects:.3f} SELECT/request)" if selects is not None else ""
        return f"{workload:<6} {app:<8} {per_request:>10,} instructions/request{extra}"

    cells = [(w, a) for w in args.workloads.split(",") for a in args.apps.split(",")]
    print(f"session {args.session}, concurrency {args.concurrency}, N={args.requests}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(lambda c: cell(*c), cells):
            print(line, flush=True)


if __name__ == "__main__":
    main()
