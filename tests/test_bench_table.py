"""The bench's table: a new name every run, and a table it did not create is never touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import MYSQL_URL, Database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import run as bench_run
from filldb import BenchTable, unique_table_name


def test_the_default_table_is_new_every_run() -> None:
    first, _ = bench_run.parse_args(["--quick"])
    second, _ = bench_run.parse_args([])
    assert first.table != second.table
    for name in (first.table, second.table):
        assert (
            name.startswith("asgi_mysql_session_bench_")
            and len(name) == len("asgi_mysql_session_bench_") + 12
        )
    assert bench_run.parse_args(["--table", "mine"])[0].table == "mine"
    assert unique_table_name() != unique_table_name()


def test_an_existing_table_is_neither_used_nor_dropped(db: Database, table: str) -> None:
    db.query(f"CREATE TABLE `{table}` (id INT PRIMARY KEY)")
    db.query(f"INSERT INTO `{table}` VALUES (1)")
    bench = BenchTable(MYSQL_URL, table)
    try:
        with pytest.raises(SystemExit, match="already exists and this run did not create it"):
            bench.create()
        with pytest.raises(RuntimeError, match="did not create it"):
            bench.truncate()
        with pytest.raises(RuntimeError, match="did not create it"):
            bench.fill(1)
        bench.drop()  # does nothing
    finally:
        bench.close()
    assert db.query(f"SELECT id FROM `{table}`") == [(1,)]


def test_a_table_the_bench_created_is_dropped(db: Database, table: str) -> None:
    bench = BenchTable(MYSQL_URL, table)
    try:
        bench.create()
        assert len(bench.fill(3)) == 3
        bench.drop()
    finally:
        bench.close()
    assert db.query("SHOW TABLES LIKE %s", (table,)) == []
