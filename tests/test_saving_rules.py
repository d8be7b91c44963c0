"""The store's save rules, as a specification against ``SessionRows`` (saving.py, README
"What it costs and how it writes").

Every test is one rule. Stores are written against rows by key hash, here a real table on
MariaDB (a ``SessionTable`` of the test's own, never a mock); a second request of the same
session is a second store, and what another process or request does meanwhile (a logout,
a login elsewhere, a write) goes to the rows directly. What is stored is read back with the
test's own connection; where the cost is the point, the statements are counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from conftest import (
    HANDED_OUT,
    Database,
    FakeClock,
    StatementCounter,
    is_tombstone,
    key_of,
    save_new,
    table_on,
)

from asgi_mysql_session import (
    SaveResult,
    SessionConflictError,
    SessionInterrupted,
    SessionStore,
    ddl,
    loading,
    new_session_id,
    saving,
    serializer,
)
from asgi_mysql_session.gateway import Gateway
from asgi_mysql_session.locks import KeyedLocks
from asgi_mysql_session.metrics import SessionObserver
from asgi_mysql_session.rows import Row
from asgi_mysql_session.rules import Rules
from asgi_mysql_session.serializer import decode, encode
from asgi_mysql_session.table import SessionTable


class Conflicts(SessionObserver):
    """Counts the writes that found the row moved on (and merged)."""

    def __init__(self) -> None:
        self.count = 0

    def write_conflict(self) -> None:
        self.count += 1


RowsWith = Callable[..., SessionTable]


@pytest.fixture
def rows_with(gateway: Gateway, table: str, db: Database, clock: FakeClock) -> RowsWith:
    """The test's table under the rules given (``Rules``' defaults otherwise), counting
    conflicts; every call gives other rules over the same rows."""
    db.query(ddl.create_table(table))

    def make(**rules: Any) -> SessionTable:
        return table_on(gateway, table, clock, observer=Conflicts(), **rules)

    return make


@pytest.fixture
def rows(rows_with: RowsWith) -> SessionTable:
    return rows_with()


@pytest.fixture
def statements(rows: SessionTable) -> StatementCounter:
    return StatementCounter(rows.gateway)


def conflicts(rows: SessionTable) -> int:
    observer = rows.observer
    assert isinstance(observer, Conflicts)
    return observer.count


def stored(db: Database, table: str, sid: str) -> dict[str, Any] | None:
    """The session's data as the table holds it, or None without a row."""
    found = db.query(f"SELECT session_data FROM `{table}` WHERE session_key = %s", (key_of(sid),))
    if not found:
        return None
    data = found[0][0]
    assert isinstance(data, bytes)
    return decode(data)


def stored_row(db: Database, table: str, sid: str) -> tuple[Any, ...]:
    """(data, expiry, version, owner) as the table holds them."""
    [row] = db.query(
        f"SELECT session_data, session_expiry, session_version, session_owner FROM `{table}` "
        "WHERE session_key = %s",
        (key_of(sid),),
    )
    return row


async def opened(rows: SessionTable, sid: str) -> SessionStore:
    """The session as a request reads it (one SELECT)."""
    store = SessionStore(rows, sid)
    await store.read()
    assert not store.is_new
    return store


# -- what is written, and what it costs ----------------------------------------------------


async def test_an_empty_new_session_is_never_stored(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    store = SessionStore(rows)
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(0,)]


async def test_a_new_session_is_one_insert(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    store = SessionStore(rows)
    store["user"] = "ada"
    assert await store.release() is SaveResult.CREATED
    assert statements.delta() == {"insert": 1}
    assert stored(db, table, store.session_id) == {"user": "ada"}


async def test_an_unchanged_session_writes_nothing(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, a=1, cart=[1, 2])
    store = await opened(rows, sid)
    assert dict(store) == {"a": 1, "cart": [1, 2]}  # read, not changed
    store["a"] = 1  # set to what it already was
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert stored_row(db, table, sid)[2] == 1  # still the version it was created at


async def test_a_change_inside_a_nested_value_is_saved_without_being_marked(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, cart=[1, 2])
    store = await opened(rows, sid)
    store["cart"].append(3)  # no __setitem__, no mark_modified()
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert stored(db, table, sid) == {"cart": [1, 2, 3]}


async def test_a_nested_value_read_and_left_alone_writes_nothing(
    rows: SessionTable, statements: StatementCounter
) -> None:
    sid = await save_new(rows, cart=[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}])
    store = await opened(rows, sid)
    assert store["cart"][1]["qty"] == 2  # read, not changed
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}


# Every way the store hands out a list it holds: what the app changes through it is saved.
@pytest.mark.parametrize("way", HANDED_OUT)
async def test_a_nested_value_changed_in_place_is_saved_whichever_method_handed_it_out(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str, way: str
) -> None:
    sid = await save_new(rows, a=1, cart=[1, 2])
    store = await opened(rows, sid)
    HANDED_OUT[way](store).append(3)
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert stored(db, table, sid) == {"a": 1, "cart": [1, 2, 3]}


@pytest.mark.parametrize("how", ["setitem", "update", "setdefault"])
async def test_a_nested_value_the_app_set_and_changed_afterwards_is_saved(
    rows: SessionTable, db: Database, table: str, how: str
) -> None:
    sid = await save_new(rows, a=1)
    store = await opened(rows, sid)
    cart = [1]
    if how == "setitem":
        store["cart"] = cart
    elif how == "update":
        store.update(cart=cart)
    else:
        store.setdefault("cart", cart)
    assert await store.release() is SaveResult.UPDATED
    cart.append(2)  # the app kept its reference
    assert await store.release() is SaveResult.UPDATED
    assert stored(db, table, sid) == {"a": 1, "cart": [1, 2]}


async def test_a_nested_value_changed_around_the_store_is_saved_once_marked_modified(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, cart=[1, 2])
    store = await opened(rows, sid)
    dict.__getitem__(store, "cart").append(3)  # C-level: no method of the store saw it
    store.mark_modified()
    assert await store.release() is SaveResult.UPDATED
    assert stored(db, table, sid) == {"cart": [1, 2, 3]}


async def test_nested_values_are_checked_when_first_handed_out_and_packed_only_after(
    rows: SessionTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read or write of a flat key costs nothing for a large cart beside it."""
    calls: list[str] = []

    def spied(name: str, module: Any) -> None:
        real = getattr(module, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    cart = [{"sku": f"SKU-{n}", "qty": 1} for n in range(50)]
    sid = await save_new(rows, user_id=7, cart=cart)
    spied("try_pack", saving)
    spied("check_value", saving)  # a save's
    spied("check_value", loading)  # when handed out
    spied("check_value", serializer)  # decode()'s
    store = await opened(rows, sid)
    assert store["user_id"] == 7
    assert await store.release() is SaveResult.NOTHING
    assert calls == []  # the cart was not walked when read, nor packed at release
    store["counter"] = 1
    calls.clear()  # (the counter's own check)
    assert await store.release() is SaveResult.UPDATED
    assert calls == []  # nor walked when written back
    assert store["cart"] == cart
    assert calls == ["check_value"]  # checked the first time the app gets it
    assert store["cart"] == cart
    assert await store.release() is SaveResult.NOTHING
    assert calls == ["check_value", "try_pack"]  # the app holds it: compared at release
    store["counter"] = 2
    calls.clear()
    assert await store.release() is SaveResult.UPDATED
    assert calls == ["check_value"]  # and checked again before it is written


async def test_a_nested_value_changed_in_place_is_packed_once_at_release(
    rows: SessionTable, db: Database, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes packed to compare with the row are the bytes written (after the check)."""
    sid = await save_new(rows, a=1, cart=[1, 2])
    packs: list[int] = []
    real = serializer.pack_values

    def spy(values: dict[str, Any]) -> bytes:
        packs.append(len(values))
        return real(values)

    monkeypatch.setattr(serializer, "pack_values", spy)
    monkeypatch.setattr(saving, "pack_values", spy)
    store = await opened(rows, sid)
    store["cart"].append(3)
    assert await store.release() is SaveResult.UPDATED
    assert packs == [2]
    assert stored(db, table, sid) == {"a": 1, "cart": [1, 2, 3]}


async def test_a_stored_nested_value_that_cannot_be_stored_is_dropped_when_first_handed_out(
    rows: SessionTable, db: Database, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A row written by something else: the rest of the session stays, the bad value goes."""
    sid = await save_new(rows, user="ada", prefs={"lang": "en"})
    db.query(
        f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s",
        (
            msgpack.packb({"user": "ada", "prefs": {b"lang": "en"}, "cart": [1]}, use_bin_type=True),
            key_of(sid),
        ),
    )
    store = await opened(rows, sid)
    assert not store.is_new
    with caplog.at_level(logging.WARNING, logger="asgi_mysql_session"):
        assert store.get("prefs") is None
    assert "dict keys must be str" in caplog.text and sid not in caplog.text
    assert sorted(store) == ["cart", "user"]
    assert await store.release() is SaveResult.UPDATED  # written again without it
    assert stored(db, table, sid) == {"user": "ada", "cart": [1]}


async def test_a_key_whose_stored_value_cannot_be_stored_is_not_in_the_session(
    rows: SessionTable, db: Database, table: str
) -> None:
    """``k in session`` and ``session[k]`` agree, whichever the app asks first."""
    sid = await save_new(rows, user="ada")
    db.query(
        f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s",
        (msgpack.packb({"user": "ada", "prefs": {b"lang": "en"}}), key_of(sid)),
    )
    store = await opened(rows, sid)
    assert "prefs" not in store
    with pytest.raises(KeyError):
        store["prefs"]


async def test_a_stored_nested_value_never_handed_out_is_written_back_as_it_was_read(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, user="ada")
    foreign = {"user": "ada", "at": [msgpack.Timestamp(1, 0)]}  # not a value the app could set
    db.query(
        f"UPDATE `{table}` SET session_data = %s WHERE session_key = %s",
        (msgpack.packb(foreign, use_bin_type=True), key_of(sid)),
    )
    store = await opened(rows, sid)
    store["n"] = 1
    assert await store.release() is SaveResult.UPDATED
    assert stored(db, table, sid) == {**foreign, "n": 1}


async def test_an_unstorable_value_put_inside_a_nested_value_is_refused_by_its_path(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, cart=[{"sku": "a"}])
    store = await opened(rows, sid)
    store["cart"][0]["tags"] = {"x"}  # a set, changed in place: msgpack cannot store it
    statements.start()
    with pytest.raises(TypeError, match=re.escape("at 'cart'[0]['tags']: set is not storable")):
        await store.release()
    assert statements.delta() == {}
    assert stored(db, table, sid) == {"cart": [{"sku": "a"}]}


async def test_an_owner_set_is_saved_even_when_the_modified_flag_was_reset(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, a=1)
    store = await opened(rows, sid)
    store.owner = "ada"
    store.modified = False  # as Starlette allows
    store.mark_accessed()
    assert await store.release() is SaveResult.UPDATED
    assert stored_row(db, table, sid)[3] == "ada"


async def test_an_emptied_session_is_one_delete(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, a=1, b=2)
    store = await opened(rows, sid)
    del store["a"]
    del store["b"]
    statements.start()
    assert await store.release() is SaveResult.DESTROYED
    assert statements.delta() == {"delete": 1}
    assert stored(db, table, sid) is None and store.destroyed


async def test_what_is_set_after_a_clear_starts_a_new_session_under_a_new_id(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, user="ada")
    store = await opened(rows, sid)
    store.clear()  # a logout...
    store["flash"] = "bye"  # ...that leaves a message
    statements.start()
    assert await store.release() is SaveResult.CREATED
    assert statements.delta() == {"delete": 1, "insert": 1}
    assert store.session_id != sid
    assert stored(db, table, sid) is None  # the old id opens nothing
    assert stored(db, table, store.session_id) == {"flash": "bye"}


# -- the deadline of an unchanged session ------------------------------------------------


async def test_an_unmodified_session_is_touched_only_after_touch_after(
    rows_with: RowsWith, db: Database, table: str, clock: FakeClock
) -> None:
    rows = rows_with(max_lifetime=3600, touch_after=60)
    statements = StatementCounter(rows.gateway)
    sid = await save_new(rows, n=1)
    data, expiry, version, _ = stored_row(db, table, sid)
    assert expiry == rows.rules.now() + 3600
    clock.advance(59)
    store = await opened(rows, sid)
    statements.start()
    assert await store.release() is SaveResult.NOTHING  # the deadline would move 59 s: not yet
    assert statements.delta() == {}
    clock.advance(1)
    store = await opened(rows, sid)
    statements.start()
    assert await store.release() is SaveResult.TOUCHED
    assert statements.delta() == {"update": 1}
    # The deadline alone moved: the data and the version (a concurrent writer's condition) did not.
    assert stored_row(db, table, sid) == (data, rows.rules.now() + 3600, version, None)


async def test_the_touch_that_reaches_the_absolute_lifetime_is_written_before_touch_after(
    rows_with: RowsWith, db: Database, table: str, clock: FakeClock
) -> None:
    rows = rows_with(max_lifetime=600, absolute_lifetime=1000, touch_after=60)
    sid = await save_new(rows, n=1)
    cap = rows.rules.now() + 1000
    clock.advance(390)
    assert await (await opened(rows, sid)).release() is SaveResult.TOUCHED
    assert stored_row(db, table, sid)[1] == cap - 10
    clock.advance(5)  # the deadline would move 5 s, short of the cap: not yet
    assert await (await opened(rows, sid)).release() is SaveResult.NOTHING
    clock.advance(5)  # it would move 10 s, up to the cap: now, or the session ends 10 s early
    assert await (await opened(rows, sid)).release() is SaveResult.TOUCHED
    assert stored_row(db, table, sid)[1] == cap


async def test_a_deadline_beyond_a_lowered_max_lifetime_is_brought_down_once(
    rows_with: RowsWith, db: Database, table: str
) -> None:
    sid = await save_new(rows_with(max_lifetime=3600), n=1)
    rows = rows_with(max_lifetime=600)  # the policy was lowered since
    statements = StatementCounter(rows.gateway)
    store = await opened(rows, sid)
    statements.start()
    assert await store.release() is SaveResult.TOUCHED
    assert statements.delta() == {"update": 1}
    assert stored_row(db, table, sid)[1] == rows.rules.now() + 600
    assert await (await opened(rows, sid)).release() is SaveResult.NOTHING


# -- two requests of one session, both changing it ------------------------------------------


async def test_two_writers_changing_different_keys_both_persist(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, seed="kept")
    first, second = await opened(rows, sid), await opened(rows, sid)
    first["a"] = 1
    second["b"] = 2
    assert await first.release() is SaveResult.UPDATED
    assert await second.release() is SaveResult.UPDATED  # merged onto the first's write
    assert stored(db, table, sid) == dict(second) == {"seed": "kept", "a": 1, "b": 2}
    assert conflicts(rows) == 1


async def test_a_write_that_lost_costs_one_read_and_one_more_update(
    rows: SessionTable, statements: StatementCounter
) -> None:
    sid = await save_new(rows, seed="kept")
    first, second = await opened(rows, sid), await opened(rows, sid)
    first["a"] = 1
    second["b"] = 2
    assert await first.release() is SaveResult.UPDATED
    statements.start()
    assert await second.release() is SaveResult.UPDATED
    # The conditional UPDATE that matched nothing, the read of the newer row, the merged UPDATE.
    assert statements.delta() == {"update": 2, "select": 1}


@pytest.mark.parametrize(
    ("earlier", "later", "stays"),
    [
        ({"k": "earlier"}, {"k": "later"}, {"k": "later"}),
        ({"k": None}, {"k": "later"}, {"k": "later"}),
        ({"k": "earlier"}, {"k": None}, {}),
    ],
    ids=["set, then set", "deleted, then set", "set, then deleted"],
)
async def test_for_the_same_key_the_later_write_wins(
    rows: SessionTable,
    db: Database,
    table: str,
    earlier: dict[str, str | None],
    later: dict[str, str | None],
    stays: dict[str, str],
) -> None:
    """Later as in saved later; both read the session before either saved (None: deleted)."""
    sid = await save_new(rows, k="read", seed="kept")
    first, second = await opened(rows, sid), await opened(rows, sid)
    for store, change in ((first, earlier), (second, later)):
        for key, value in change.items():
            if value is None:
                del store[key]
            else:
                store[key] = value
    await first.release()
    await second.release()
    assert stored(db, table, sid) == {"seed": "kept", **stays}


@pytest.mark.parametrize("deleter_saves", ["first", "last"])
async def test_a_key_deleted_by_one_writer_and_untouched_by_the_other_stays_deleted(
    rows: SessionTable, db: Database, table: str, deleter_saves: str
) -> None:
    sid = await save_new(rows, x=1, y=2)
    deleter, other = await opened(rows, sid), await opened(rows, sid)
    del deleter["x"]
    other["y"] = 3  # it still holds x, as read: that is no change of its own
    for store in (deleter, other) if deleter_saves == "first" else (other, deleter):
        assert await store.release() is SaveResult.UPDATED
    assert stored(db, table, sid) == {"y": 3}


async def test_when_the_writers_delete_every_key_between_them_the_row_is_deleted(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, x=1, y=2)
    first, second = await opened(rows, sid), await opened(rows, sid)
    del first["x"]
    del second["y"]
    assert await first.release() is SaveResult.UPDATED
    assert await second.release() is SaveResult.DESTROYED  # merged: nothing left
    assert stored(db, table, sid) is None and second.destroyed


async def test_changes_already_present_write_nothing(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, seed="kept")
    first, second = await opened(rows, sid), await opened(rows, sid)
    first["k"] = "same"
    second["k"] = "same"
    assert await first.release() is SaveResult.UPDATED
    statements.start()
    assert await second.release() is SaveResult.NOTHING
    assert statements.delta() == {"update": 1, "select": 1}  # the one that lost, the read: no write
    assert stored_row(db, table, sid)[2] == 2  # written once, by the first
    assert stored(db, table, sid) == {"seed": "kept", "k": "same"}


async def test_an_owner_set_by_one_writer_is_kept_by_the_other_writers_merge(
    rows: SessionTable, db: Database, table: str
) -> None:
    sid = await save_new(rows, seed="kept")
    login, other = await opened(rows, sid), await opened(rows, sid)
    login.owner = "ada"
    other["theme"] = "dark"
    assert await login.release() is SaveResult.UPDATED
    assert await other.release() is SaveResult.UPDATED
    assert stored_row(db, table, sid)[3] == "ada" and other.owner == "ada"
    assert stored(db, table, sid) == {"seed": "kept", "theme": "dark"}


async def test_for_the_owner_too_the_later_write_wins(rows: SessionTable, db: Database, table: str) -> None:
    sid = await save_new(rows, owner="ada", seed="kept")
    first, second = await opened(rows, sid), await opened(rows, sid)
    first.owner = "bob"
    second.owner = None  # a logout of the owner, keeping the data
    await first.release()
    await second.release()
    assert stored_row(db, table, sid)[3] is None


async def test_writers_of_one_process_take_turns_so_one_retry_is_enough(
    rows_with: RowsWith, db: Database, table: str
) -> None:
    rows = rows_with(write_retries=1)
    sid = await save_new(rows, seed="kept")
    stores = [await opened(rows, sid) for _ in range(20)]
    for i, store in enumerate(stores):
        store[f"k{i}"] = i
    results = await asyncio.gather(*(store.release() for store in stores), return_exceptions=True)
    assert results == [SaveResult.UPDATED] * 20  # no SessionConflictError: none starved
    assert stored(db, table, sid) == {"seed": "kept", **{f"k{i}": i for i in range(20)}}


# -- the row ended meanwhile -----------------------------------------------------------------


async def test_a_row_deleted_meanwhile_is_never_recreated(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, n=1)
    store = await opened(rows, sid)
    assert await rows.delete(key_of(sid))  # a logout in another tab
    store["n"] = 2
    statements.start()
    with pytest.raises(SessionInterrupted) as ended:
        await store.release()
    assert not ended.value.superseded
    assert statements.delta() == {"update": 1, "select": 1}  # never an INSERT
    assert stored(db, table, sid) is None
    assert store.destroyed and dict(store) == {}


async def test_a_row_expired_meanwhile_is_never_revived(
    rows: SessionTable, db: Database, table: str, clock: FakeClock
) -> None:
    sid = await save_new(rows, n=1)
    store = await opened(rows, sid)
    clock.advance(rows.rules.max_lifetime)  # its deadline passed before the write
    store["n"] = 2
    with pytest.raises(SessionInterrupted) as ended:
        await store.release()
    assert not ended.value.superseded
    assert stored(db, table, sid) == {"n": 1}  # left as it was, for the sweep


async def test_a_row_renamed_meanwhile_is_reported_superseded_and_not_written(
    rows: SessionTable, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await save_new(rows, n=1)
    store = await opened(rows, sid)
    new = new_session_id()
    assert await rows.rename(key_of(sid), key_of(new))  # a login in another tab
    store["n"] = 2
    statements.start()
    with pytest.raises(SessionInterrupted) as ended:
        await store.release()
    assert ended.value.superseded  # the client holds (or gets) the newer cookie: leave it alone
    assert statements.delta() == {"update": 1, "select": 1}
    assert is_tombstone(db, table, sid)
    assert stored(db, table, new) == {"n": 1}  # the session under its new id is untouched


# -- writers that keep losing ---------------------------------------------------------------


class Contended:
    """``rows`` as a store sees them while another writer keeps getting in first: right after
    each of the store's reads of the row, ``times`` times in all, the other writer saves a key
    of its own. Counts the store's conditional UPDATEs."""

    def __init__(self, rows: SessionTable, times: int) -> None:
        self.rows = rows
        self.rules: Rules = rows.rules
        self.observer: SessionObserver = rows.observer
        self.save_locks: KeyedLocks = rows.save_locks
        self.times = times
        self.updates = 0

    async def lookup(self, key_hash: str) -> Row | None:
        row = await self.rows.lookup(key_hash)
        if row is not None and self.times:
            self.times -= 1
            theirs = encode({**row.values, "theirs": self.times})
            assert await self.rows.update(key_hash, theirs, row.expiry, row.owner, row.version)
        return row

    async def update(self, key_hash: str, data: bytes, expiry: int, owner: str | None, version: int) -> bool:
        self.updates += 1
        return await self.rows.update(key_hash, data, expiry, owner, version)

    async def insert(self, key_hash: str, data: bytes, expiry: int, created: int, owner: str | None) -> None:
        await self.rows.insert(key_hash, data, expiry, created, owner)

    async def touch(self, key_hash: str, expiry: int) -> bool:
        return await self.rows.touch(key_hash, expiry)

    async def clamp(self, key_hash: str, expiry: int) -> bool:
        return await self.rows.clamp(key_hash, expiry)

    async def rename(self, old_hash: str, new_hash: str) -> bool:
        return await self.rows.rename(old_hash, new_hash)

    async def delete(self, key_hash: str) -> bool:
        return await self.rows.delete(key_hash)


async def test_the_writer_gives_up_after_write_retries_conflicts_with_a_conflict_error(
    rows_with: RowsWith, db: Database, table: str
) -> None:
    rows = rows_with(write_retries=3)
    sid = await save_new(rows, n=0)
    contended = Contended(rows, times=1 + 3)  # before its write, and before each of 3 retries
    store = SessionStore(contended, sid)
    await store.read()
    store["mine"] = 1
    with pytest.raises(SessionConflictError, match="gave up after 4 conflicting writes"):
        await store.release()
    assert contended.updates == 1 + 3  # its write and 3 retries, all lost
    assert conflicts(rows) == 3  # each merged and retried; the last one given up
    assert stored(db, table, sid) == {"n": 0, "theirs": 0}  # the other writer's, not ours


async def test_a_writer_that_wins_on_its_last_retry_saves(
    rows_with: RowsWith, db: Database, table: str
) -> None:
    rows = rows_with(write_retries=3)
    sid = await save_new(rows, n=0)
    contended = Contended(rows, times=3)  # the last retry finds nobody in its way
    store = SessionStore(contended, sid)
    await store.read()
    store["mine"] = 1
    assert await store.release() is SaveResult.UPDATED
    assert contended.updates == 1 + 3
    assert stored(db, table, sid) == {"n": 0, "theirs": 0, "mine": 1}
