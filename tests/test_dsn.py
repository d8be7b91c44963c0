"""DSN parsing, as the provider and the synchronous side doors (scripts, bench, tests) read it."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from asgi_mysql_session import MySQLSessionProvider, SessionBackendError, SessionConfigError
from asgi_mysql_session.cli import main
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


# -- no secret in any message ---------------------------------------------------------------

# Passwords that break URL parsing when not percent-encoded, and where their pieces land.
UNENCODED = ["s3cr#et9", "s3cr/et9", "s3cr?et9", "1234?5678", "1234/5678", "12#34:56", "p@ss?w0rd#x"]
# The same with commas, which separate hosts: their pieces land in the host list.
UNENCODED += ["s3c,r#et9", "ab,cd/ef,gh", "12,34?56,78", "x,yz#12:34,56", "pa,ss:12/34"]


def _pieces(password: str) -> list[str]:
    """Every run of 3+ characters between URL delimiters: none may appear in a message."""
    return [p for p in re.split(r"[@:/?#]", password) if len(p) >= 3]


@pytest.mark.parametrize("password", UNENCODED)
def test_a_password_with_unescaped_delimiters_is_never_echoed(password: str) -> None:
    with pytest.raises(SessionConfigError) as refused:
        parse_dsn(f"mysql://app:{password}@db.internal:3306/sessions?pool_max=5")
    message = str(refused.value)
    assert "percent-encode" in message
    assert not [piece for piece in _pieces(password) if piece in message], message


@pytest.mark.parametrize("password", UNENCODED)
def test_the_provider_and_the_cli_never_echo_such_a_password(
    password: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    dsn = f"mysql://app:{password}@127.0.0.1:1/sessions"
    with pytest.raises(SessionConfigError) as refused:
        MySQLSessionProvider(dsn)
    assert main(["--dsn", dsn, "stats"]) == 2
    said = str(refused.value) + capsys.readouterr().err + caplog.text
    assert not [piece for piece in _pieces(password) if piece in said], said


def test_a_percent_encoded_password_parses_to_the_original() -> None:
    password = "p@ss?w0rd#x/y:z% "
    dsn = parse_dsn(f"mysql://app:{quote(password, safe='')}@db.internal/sessions")
    assert dsn.password == password and dsn.host == "db.internal" and dsn.database == "sessions"


async def test_a_wrong_password_is_never_in_the_connection_error(table: str) -> None:
    provider = MySQLSessionProvider(
        f"mysql://root:{quote('Wr0ng-Pa55', safe='')}@127.0.0.1:3306/test?connect_timeout=3", table=table
    )
    with pytest.raises(SessionBackendError) as refused:
        await provider.open()
    assert "Wr0ng-Pa55" not in str(refused.value) and "Pa55" not in repr(refused.value.__cause__)


# -- several hosts ----------------------------------------------------------------------------


def test_several_hosts_are_kept_in_order_with_default_ports() -> None:
    dsn = parse_dsn("mysql://app:pw@127.0.0.1:3311,DB2.internal,127.0.0.1:3313/sessions?pool_max=4")
    assert dsn.hosts == (("127.0.0.1", 3311), ("db2.internal", 3306), ("127.0.0.1", 3313))
    assert dsn.host_order == "first"
    # host, port and pymysql_args() mean the first host, as for a single-host DSN.
    assert (dsn.host, dsn.port) == ("127.0.0.1", 3311)
    assert dsn.pymysql_args() == {
        "host": "127.0.0.1",
        "port": 3311,
        "user": "app",
        "password": "pw",
        "database": "sessions",
    }
    assert dsn.redacted() == "mysql://app@127.0.0.1:3311,db2.internal:3306,127.0.0.1:3313/sessions"


def test_a_single_host_dsn_has_a_one_host_tuple() -> None:
    dsn = parse_dsn("mysql://root@db:3307/test")
    assert dsn.hosts == (("db", 3307),) and dsn.redacted() == "mysql://root@db:3307/test"
    assert parse_dsn("mysql:///test").hosts == (("127.0.0.1", 3306),)


def test_ipv6_hosts_in_brackets() -> None:
    dsn = parse_dsn("mysql://root@[::1]:3311,[fe80::2],127.0.0.1/test")
    assert dsn.hosts == (("::1", 3311), ("fe80::2", 3306), ("127.0.0.1", 3306))
    assert dsn.redacted() == "mysql://root@[::1]:3311,[fe80::2]:3306,127.0.0.1:3306/test"
    assert dsn.pymysql_args()["host"] == "::1"


def test_host_order_random() -> None:
    assert parse_dsn("mysql://root@a,b/test?host_order=random").host_order == "random"
    with pytest.raises(SessionConfigError, match="host_order must be first or random"):
        parse_dsn("mysql://root@a,b/test?host_order=roundrobin")


@pytest.mark.parametrize(
    "dsn",
    [
        "mysql://root@a:3311,,b/test",  # an empty host
        "mysql://root@a:33x1,b/test",  # a port that is not a number
        "mysql://root@a,b:70000/test",  # out of range
        "mysql://root@::1/test",  # IPv6 without brackets
        "mysql://root@[::1/test",  # unclosed bracket
        "mysql://root@[::1]x/test",
    ],
)
def test_malformed_host_lists_are_refused(dsn: str) -> None:
    with pytest.raises(SessionConfigError, match="invalid MySQL DSN"):
        parse_dsn(dsn)


def test_a_socket_takes_one_host() -> None:
    with pytest.raises(SessionConfigError, match="unix_socket takes one host"):
        parse_dsn("mysql://root@a,b/test?unix_socket=/run/mysqld/mysqld.sock")


def test_a_password_is_never_in_the_redacted_form_of_several_hosts() -> None:
    dsn = parse_dsn(f"mysql://app:{quote('Se,cr:et@1', safe='')}@h1,h2:3307/db")
    assert dsn.password == "Se,cr:et@1"
    assert "Se" not in dsn.redacted() and "et@1" not in dsn.redacted()
