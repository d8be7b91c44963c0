"""DSN parsing, as the provider and the synchronous side doors (scripts, bench, tests) read it."""

from __future__ import annotations

from asgi_mysql_session.dsn import parse_dsn


def test_pymysql_args_carry_the_decoded_credentials_host_port_and_database() -> None:
    dsn = parse_dsn("mysql://app%40eu:p%3Ass@db.internal:3307/sessions?timeout=2")
    assert dsn.pymysql_args() == {
        "host": "db.internal",
        "port": 3307,
        "user": "app@eu",
        "password": "p:ss",
        "database": "sessions",
    }


def test_pymysql_args_use_the_same_defaults_as_the_provider() -> None:
    assert parse_dsn("mysql:///test").pymysql_args() == {
        "host": "127.0.0.1",
        "port": 3306,
        "user": "root",
        "password": "",
        "database": "test",
    }


def test_pymysql_args_keep_a_unix_socket() -> None:
    args = parse_dsn("mysql://root@localhost/test?unix_socket=/run/mysqld/mysqld.sock").pymysql_args()
    assert args["unix_socket"] == "/run/mysqld/mysqld.sock"
