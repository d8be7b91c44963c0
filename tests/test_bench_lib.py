"""The bench's shared plumbing (bench/lib): one percentile, one CPU meter, processes stopped by PID."""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path

from conftest import MYSQL_URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from lib import db
from lib.cpumeter import BUSY, TOTAL, CpuMeter, command_name, process_cpu
from lib.procs import Process, free_port, wait_ready
from lib.report import md_table, text_table
from lib.stats import paired_ratio, percentile


def test_the_percentile_is_wrks_rank() -> None:
    # wrk: rank = round(p/100 x N + 0.5), i.e. floor(p/100 x N) + 1, of the N values sorted.
    assert percentile([4, 1, 3, 2], 50) == 3
    assert percentile(range(1, 101), 99) == 100
    assert percentile(range(1, 101), 98.5) == 99
    assert percentile(range(1, 1001), 99.9) == 1000
    assert percentile(range(1, 1001), 99) == 991
    assert percentile([7, 5, 6], 0) == 5
    assert percentile([7, 5, 6], 100) == 7
    rnd = random.Random(1)
    for n in range(1, 400):
        values = [rnd.random() for _ in range(n)]
        for pct in (50, 90, 99, 99.9):
            rank = min(n, math.floor(round(pct / 100 * n + 0.5 + 1e-9)))  # wrk's C, on exact decimals
            assert percentile(values, pct) == sorted(values)[max(rank, 1) - 1]


def test_no_values_give_the_callers_default() -> None:
    assert math.isnan(percentile([], 99))
    assert percentile([], 99, empty=0.0) == 0.0


def test_the_paired_ratio_is_the_median_of_the_rounds_ratios() -> None:
    assert paired_ratio([2, 30, 4], [1, 10, 4]) == 2.0


def test_tables() -> None:
    assert text_table(["a", "num"], [["x", "1"], ["yy", "22"]], left=1).split("\n") == [
        "a   num",
        "--  ---",
        "x     1",
        "yy   22",
    ]
    assert md_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_the_cpu_meter_counts_this_process() -> None:
    meter = CpuMeter({"me": [os.getpid()], "gone": [None]})
    before, started = process_cpu(os.getpid()), time.monotonic()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    used, seconds = meter.cores(), process_cpu(os.getpid()) - before
    assert 0.2 <= seconds <= 0.3 + (time.monotonic() - started)  # clock ticks: 10 ms
    assert used["me"] > 0 and used["gone"] == 0.0
    assert used[TOTAL] + 1e-6 >= used[BUSY] >= used["me"] * 0.9
    assert process_cpu(None) == 0.0 and process_cpu(2**22 + 1) == 0.0


def test_the_database_server_is_found_by_its_pid_file() -> None:
    conn = db.connect(MYSQL_URL)
    try:
        pid = db.server_pid(conn)
        assert set(db.com_counters(conn)) == set(db.KINDS)
    finally:
        conn.close()
    assert pid is None or command_name(pid) in db.SERVER_NAMES  # None: the server is elsewhere


def test_a_process_is_waited_for_and_stopped_by_pid(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    proc = Process("http.server", command, tmp_path / "server.log", cwd=tmp_path)
    try:
        assert wait_ready(proc, port, "/") == {""}  # answered; no x-worker header
    finally:
        proc.stop(5)
    assert not proc.running()
    with contextlib.suppress(OSError):
        os.kill(proc.pid, 0)
        raise AssertionError("the process is still there")
    dead = Process("false", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "dead.log")
    assert wait_ready(dead, free_port(), "/", timeout=5) == set()
