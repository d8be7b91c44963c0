"""SessionStore: the mapping, its flags, what release() writes, lifetimes, ids, owners, conflicts."""

from __future__ import annotations

import secrets

import pytest
from conftest import Database, FakeClock, StatementCounter, is_tombstone, key_of, make_session, row_count

from asgi_mysql_session import (
    MySQLSessionProvider,
    SaveResult,
    SessionInterrupted,
    SessionStore,
)


def stored_row(db: Database, table: str, sid: str) -> tuple[object, ...] | None:
    """(data, expiry, version, created, owner) as the table holds it, or None."""
    rows = db.query(
        "SELECT session_data, session_expiry, session_version, session_created, session_owner "
        f"FROM `{table}` WHERE session_key = %s",
        (key_of(sid),),
    )
    return rows[0] if rows else None


# -- the mapping -------------------------------------------------------------------------


async def test_dict_set_get_and_contains(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store["user"] = "ada"
    assert store["user"] == "ada"
    assert "user" in store
    assert "other" not in store
    assert 1 not in store  # type: ignore[comparison-overlap]
    with pytest.raises(KeyError):
        store["other"]


async def test_dict_del_removes_the_key_and_missing_key_raises(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store["a"] = 1
    store["b"] = 2
    del store["a"]
    assert dict(store) == {"b": 2}
    with pytest.raises(KeyError):
        del store["a"]


async def test_dict_len_and_iter_follow_the_keys(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    assert len(store) == 0 and list(store) == []
    store["a"] = 1
    store["b"] = 2
    assert len(store) == 2
    assert sorted(store) == ["a", "b"]
    assert sorted(store.items()) == [("a", 1), ("b", 2)]


async def test_dict_clear_empties_the_store(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store.update(a=1, b=2)
    store.clear()
    assert len(store) == 0 and dict(store) == {}


async def test_dict_get_returns_the_default_for_a_missing_key(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store["a"] = 1
    assert store.get("a") == 1
    assert store.get("missing") is None
    assert store.get("missing", 7) == 7


async def test_go_names_set_get_delete_flush(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store.set("a", 1)
    store.set("b", [1, 2])
    assert store.get("a") == 1 and store.get("b") == [1, 2]
    store.delete("a")
    assert store.get("a") is None and "a" not in store
    store.delete("never-there")  # no error
    store.flush()
    assert dict(store) == {}


async def test_go_name_session_id_is_the_id_read(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    assert store.session_id == sid
    assert store.key_hash == key_of(sid)


async def test_repr_never_shows_the_session_id(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    assert sid not in repr(store)


# -- flags -------------------------------------------------------------------------------


async def test_a_fresh_read_is_neither_modified_nor_accessed(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    assert not store.modified and not store.accessed
    assert store.session_id == sid and not store.is_new  # identity does not count as access
    assert not store.modified and not store.accessed


@pytest.mark.parametrize(
    "look",
    [
        lambda s: s["a"],
        lambda s: s.get("a"),
        lambda s: "a" in s,
        lambda s: len(s),
        lambda s: list(s),
        lambda s: dict(s),
    ],
    ids=["getitem", "get", "contains", "len", "iter", "dict"],
)
async def test_reading_marks_accessed_but_not_modified(provider: MySQLSessionProvider, look: object) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    look(store)  # type: ignore[operator]
    assert store.accessed
    assert not store.modified


async def test_setting_marks_modified_and_accessed(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    store["b"] = 2
    assert store.modified and store.accessed


async def test_deleting_marks_modified(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1, b=2)
    store = await provider.read(sid)
    del store["a"]
    assert store.modified


async def test_delete_of_a_missing_key_does_not_mark_modified(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    store.delete("missing")
    assert not store.modified


async def test_clearing_an_empty_store_does_not_mark_modified(provider: MySQLSessionProvider) -> None:
    store = await provider.read(provider.new_session_id())
    store.clear()
    assert not store.modified and store.accessed


async def test_mark_modified_sets_the_flag(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    store.mark_modified()
    assert store.modified


async def test_a_release_that_writes_clears_modified(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    store["a"] = 2
    assert await store.release() is SaveResult.UPDATED
    assert not store.modified


# -- release(): what is written --------------------------------------------------------


async def test_new_empty_session_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    store = await provider.read(provider.new_session_id())
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert store.is_new
    assert row_count(db, table) == 0


async def test_new_session_touched_but_left_empty_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    store = await provider.read(provider.new_session_id())
    store["a"] = 1
    del store["a"]
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert row_count(db, table) == 0


async def test_new_session_with_data_is_one_insert(
    provider: MySQLSessionProvider,
    statements: StatementCounter,
    db: Database,
    table: str,
    clock: FakeClock,
) -> None:
    sid = provider.new_session_id()
    store = await provider.read(sid)
    store["user"] = "ada"
    statements.start()
    assert await store.release() is SaveResult.CREATED
    assert statements.delta() == {"insert": 1}
    assert not store.is_new and store.version == 1
    now = int(clock.now)
    assert store.created == now and store.expiry == now + provider.max_lifetime
    row = stored_row(db, table, sid)
    assert row is not None
    assert row[1:] == (now + provider.max_lifetime, 1, now, None)
    assert dict(await provider.read(sid)) == {"user": "ada"}


async def test_unchanged_existing_session_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada", items=[1, 2])
    before = stored_row(db, table, sid)
    store = await provider.read(sid)
    assert store["user"] == "ada" and store["items"] == [1, 2] and len(store) == 2
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert stored_row(db, table, sid) == before


async def test_setting_the_same_value_again_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada", items=[1, {"x": 2}])
    before = stored_row(db, table, sid)
    store = await provider.read(sid)
    store["user"] = "ada"
    store["items"] = [1, {"x": 2}]
    assert store.modified
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert stored_row(db, table, sid) == before


async def test_changing_a_value_is_one_update_that_bumps_the_version(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, n=1)
    store = await provider.read(sid)
    store["n"] = 2
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert store.version == 2
    row = stored_row(db, table, sid)
    assert row is not None and row[2] == 2
    assert dict(await provider.read(sid)) == {"n": 2}


async def test_in_place_mutation_of_a_nested_list_is_written(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, cart={"items": [1, 2]})
    store = await provider.read(sid)
    store["cart"]["items"].append(3)
    assert not store.modified  # never told, still caught at release
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert dict(await provider.read(sid)) == {"cart": {"items": [1, 2, 3]}}


async def test_clearing_an_existing_session_deletes_the_row(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store.clear()
    statements.start()
    assert await store.release() is SaveResult.DESTROYED
    assert statements.delta() == {"delete": 1}
    assert store.destroyed
    assert stored_row(db, table, sid) is None
    assert not await provider.exist(sid)


async def test_deleting_the_last_key_deletes_the_row(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    del store["user"]
    statements.start()
    assert await store.release() is SaveResult.DESTROYED
    assert statements.delta() == {"delete": 1}
    assert row_count(db, table) == 0


async def test_deadline_is_not_touched_before_touch_after(
    provider: MySQLSessionProvider,
    statements: StatementCounter,
    clock: FakeClock,
    db: Database,
    table: str,
) -> None:
    sid = await make_session(provider, a=1)
    before = stored_row(db, table, sid)
    clock.advance(provider.touch_after - 1)
    store = await provider.read(sid)
    assert store["a"] == 1
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert stored_row(db, table, sid) == before


async def test_deadline_is_touched_once_touch_after_has_passed(
    provider: MySQLSessionProvider,
    statements: StatementCounter,
    clock: FakeClock,
    db: Database,
    table: str,
) -> None:
    sid = await make_session(provider, a=1)
    before = stored_row(db, table, sid)
    assert before is not None
    clock.advance(provider.touch_after)
    store = await provider.read(sid)
    statements.start()
    assert await store.release() is SaveResult.TOUCHED
    assert statements.delta() == {"update": 1}
    after = stored_row(db, table, sid)
    assert after is not None
    data, expiry, version, created, owner = after
    assert expiry == int(clock.now) + provider.max_lifetime
    assert store.expiry == expiry
    assert (data, version, created, owner) == (before[0], before[2], before[3], before[4])
    assert version == 1 and store.version == 1


async def test_an_untouched_store_is_also_touched_when_due(
    provider: MySQLSessionProvider, statements: StatementCounter, clock: FakeClock
) -> None:
    sid = await make_session(provider, a=1)
    clock.advance(provider.touch_after)
    store = await provider.read(sid)  # the app never looks at the data
    statements.start()
    assert await store.release() is SaveResult.TOUCHED
    assert statements.delta() == {"update": 1}


async def test_a_second_release_after_a_touch_does_not_touch_again(
    provider: MySQLSessionProvider, statements: StatementCounter, clock: FakeClock
) -> None:
    sid = await make_session(provider, a=1)
    clock.advance(provider.touch_after)
    assert await (await provider.read(sid)).release() is SaveResult.TOUCHED
    clock.advance(provider.touch_after - 1)
    store = await provider.read(sid)
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}


async def test_touch_never_moves_the_deadline_past_the_absolute_lifetime(
    provider: MySQLSessionProvider,
    statements: StatementCounter,
    clock: FakeClock,
    db: Database,
    table: str,
) -> None:
    assert provider.absolute_lifetime is not None
    sid = await make_session(provider, a=1)
    cap = int(clock.now) + provider.absolute_lifetime
    while int(clock.now) + provider.touch_after < cap:
        clock.advance(provider.touch_after)
        store = await provider.read(sid)
        assert not store.is_new
        previous = store.expiry
        expected = min(int(clock.now) + provider.max_lifetime, cap)
        statements.start()
        result = await store.release()
        row = stored_row(db, table, sid)
        assert row is not None and row[1] == expected <= cap
        if expected > previous:
            assert result is SaveResult.TOUCHED and statements.delta() == {"update": 1}
        else:  # on the cap already: nothing left to extend, nothing written
            assert result is SaveResult.NOTHING and statements.delta() == {}
    assert stored_row(db, table, sid)[1] == cap  # type: ignore[index]


async def test_a_data_write_never_moves_the_deadline_past_the_absolute_lifetime(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    assert provider.absolute_lifetime is not None
    sid = await make_session(provider, n=0)
    cap = int(clock.now) + provider.absolute_lifetime
    n = 0
    while int(clock.now) < cap - 10:
        clock.now = min(clock.now + provider.max_lifetime - 1, cap - 10)
        store = await provider.read(sid)
        n += 1
        store["n"] = n
        assert await store.release() is SaveResult.UPDATED
        assert store.expiry == min(int(clock.now) + provider.max_lifetime, cap)
    assert store.expiry == cap
    assert stored_row(db, table, sid)[1] == cap  # type: ignore[index]


async def test_an_active_session_is_readable_until_the_absolute_lifetime_and_not_after(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    # A request every 100 s (more often than touch_after); the first one writes (a login),
    # the others only read.
    assert provider.absolute_lifetime is not None
    sid = await make_session(provider, n=0)
    created = int(clock.now)
    end = created + provider.absolute_lifetime
    step = 100
    assert step < provider.touch_after
    clock.advance(step)
    store = await provider.read(sid)
    store["user"] = "ada"
    assert await store.release() is SaveResult.UPDATED
    while int(clock.now) + step < end:
        clock.advance(step)
        store = await provider.read(sid)
        assert not store.is_new, (
            f"an active session ended {end - int(clock.now)}s before its absolute lifetime"
        )
        assert store["user"] == "ada"
        await store.release()
    clock.now = end - 1
    store = await provider.read(sid)
    assert not store.is_new, "an active session ended 1s before its absolute lifetime"
    assert store.created == created
    await store.release()
    clock.now = end
    store = await provider.read(sid)
    assert store.is_new and dict(store) == {}
    assert not await provider.exist(sid)


async def test_an_idle_session_dies_after_max_lifetime(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    sid = await make_session(provider, a=1)
    clock.advance(provider.max_lifetime - 1)
    assert not (await provider.read(sid)).is_new
    clock.advance(1)
    assert (await provider.read(sid)).is_new


# -- destroy and regenerate --------------------------------------------------------------


async def test_destroy_deletes_the_row_at_once(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    statements.start()
    await store.destroy()
    assert statements.delta() == {"delete": 1}
    assert store.destroyed and store.is_new and dict(store) == {}
    assert stored_row(db, table, sid) is None


async def test_release_after_destroy_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store["user"] = "bob"
    await store.destroy()
    statements.start()
    assert await store.release() is SaveResult.NOTHING
    assert statements.delta() == {}
    assert row_count(db, table) == 0


async def test_destroy_of_a_new_store_runs_no_statement(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    store = await provider.read(provider.new_session_id())
    store["a"] = 1
    statements.start()
    await store.destroy()
    assert statements.delta() == {}
    assert await store.release() is SaveResult.NOTHING
    assert await provider.all() == 0


async def test_setting_data_after_destroy_starts_a_session_under_a_new_id(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    store = await provider.read(old)
    await store.destroy()
    store["cart"] = [1]
    assert await store.release() is SaveResult.CREATED
    new = store.session_id
    assert new != old
    assert not store.destroyed
    assert not await provider.exist(old)
    assert dict(await provider.read(new)) == {"cart": [1]}
    assert stored_row(db, table, old) is None
    assert row_count(db, table) == 1


async def test_setting_data_after_a_clearing_release_uses_a_new_id(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    store = await provider.read(old)
    store.clear()
    assert await store.release() is SaveResult.DESTROYED
    store["x"] = 1
    assert await store.release() is SaveResult.CREATED
    assert store.session_id != old
    assert stored_row(db, table, old) is None
    assert dict(await provider.read(store.session_id)) == {"x": 1}


async def test_regenerate_gives_a_new_id_keeping_the_data(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    before = stored_row(db, table, old)
    store = await provider.read(old)
    statements.start()
    await store.regenerate()
    # One transaction: the rename, and a tombstone under the old key (see test_superseded.py).
    assert statements.delta() == {"begin": 1, "update": 1, "insert": 1, "commit": 1}
    new = store.session_id
    assert new != old and store.key_hash == key_of(new)
    assert dict(store) == {"user": "ada"}
    assert stored_row(db, table, new) == before  # the same row, renamed
    assert await store.release() is SaveResult.NOTHING


async def test_regenerate_kills_the_old_id_at_once(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    store = await provider.read(old)
    await store.regenerate()
    assert not await provider.exist(old)
    assert (await provider.read(old)).is_new
    assert is_tombstone(db, table, old)
    assert row_count(db, table) == 1


async def test_regenerate_saves_pending_changes_under_the_new_id(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    old = await make_session(provider, user="anon")
    store = await provider.read(old)
    store["user"] = "ada"
    store["role"] = "admin"
    await store.regenerate()
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    assert dict(await provider.read(store.session_id)) == {"user": "ada", "role": "admin"}
    assert not await provider.exist(old)
    assert row_count(db, table) == 1


async def test_regenerate_of_a_new_store_creates_it_under_the_new_id(provider: MySQLSessionProvider) -> None:
    first = provider.new_session_id()
    store = await provider.read(first)
    store["a"] = 1
    await store.regenerate()
    assert store.session_id != first
    assert await store.release() is SaveResult.CREATED
    assert not await provider.exist(first)
    assert dict(await provider.read(store.session_id)) == {"a": 1}


async def test_a_new_store_mints_its_id_only_when_it_is_first_needed(
    provider: MySQLSessionProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    minted: list[str] = []
    mint = secrets.token_urlsafe  # what every session id is drawn from

    def counting(nbytes: int | None = None) -> str:
        minted.append(mint(nbytes))
        return minted[-1]

    monkeypatch.setattr(secrets, "token_urlsafe", counting)
    store = provider.new_session()
    store["a"] = 1
    await store.regenerate()  # nothing stored, nothing seen: still nothing to mint
    assert minted == []
    assert await store.release() is SaveResult.CREATED
    assert minted == [store.session_id]
    assert dict(await provider.read(store.session_id)) == {"a": 1}


# -- owners ------------------------------------------------------------------------------


async def test_owner_is_saved_to_the_session_owner_column(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, owner="user-1", a=1)
    row = stored_row(db, table, sid)
    assert row is not None and row[4] == "user-1"
    assert (await provider.read(sid)).owner == "user-1"


async def test_setting_only_the_owner_of_an_existing_session_is_one_update(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, a=1)
    store = await provider.read(sid)
    assert store.owner is None
    store.owner = "user-7"
    statements.start()
    assert await store.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 1}
    row = stored_row(db, table, sid)
    assert row is not None and row[4] == "user-7" and row[2] == 2
    store = await provider.read(sid)
    store.owner = None
    assert await store.release() is SaveResult.UPDATED
    assert stored_row(db, table, sid)[4] is None  # type: ignore[index]


@pytest.mark.parametrize("bad", ["", "x" * 192, 42])
async def test_an_invalid_owner_is_refused(provider: MySQLSessionProvider, bad: object) -> None:
    store = await provider.read(provider.new_session_id())
    with pytest.raises(ValueError, match="owner"):
        store.owner = bad  # type: ignore[assignment]
    assert store.owner is None and not store.modified


async def test_an_owner_of_191_characters_is_accepted(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    owner = "é" * 191
    sid = await make_session(provider, owner=owner, a=1)
    assert stored_row(db, table, sid)[4] == owner  # type: ignore[index]


async def test_sessions_of_lists_the_live_sessions_of_an_owner(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    first = await make_session(provider, owner="ada", a=1)
    clock.advance(1)
    second = await make_session(provider, owner="ada", a=2)
    await make_session(provider, owner="bob", a=3)
    await make_session(provider, a=4)
    listed = await provider.sessions_of("ada")
    assert [s.key_hash for s in listed] == [key_of(first), key_of(second)]
    assert [s.created for s in listed] == [int(clock.now) - 1, int(clock.now)]
    assert [s.expiry for s in listed] == [s.created + provider.max_lifetime for s in listed]
    assert await provider.sessions_of("nobody") == []
    assert all(first not in repr(s) and second not in repr(s) for s in listed)


async def test_sessions_of_leaves_out_expired_sessions(
    provider: MySQLSessionProvider, clock: FakeClock
) -> None:
    await make_session(provider, owner="ada", a=1)
    clock.advance(provider.max_lifetime - 1)
    live = await make_session(provider, owner="ada", a=2)
    clock.advance(1)
    assert [s.key_hash for s in await provider.sessions_of("ada")] == [key_of(live)]


async def test_destroy_owner_ends_every_session_of_the_owner_only(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    mine = [await make_session(provider, owner="ada", a=i) for i in range(3)]
    other = await make_session(provider, owner="bob", a=9)
    anonymous = await make_session(provider, a=10)
    assert await provider.destroy_owner("ada") == 3
    assert [await provider.exist(sid) for sid in mine] == [False, False, False]
    assert all(stored_row(db, table, sid) is None for sid in mine)
    assert dict(await provider.read(other)) == {"a": 9}
    assert dict(await provider.read(anonymous)) == {"a": 10}
    assert await provider.sessions_of("ada") == []
    assert await provider.destroy_owner("ada") == 0


async def test_a_request_in_flight_does_not_bring_back_a_session_after_destroy_owner(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, owner="ada", a=1)
    store = await provider.read(sid)
    store["a"] = 2
    assert await provider.destroy_owner("ada") == 1
    with pytest.raises(SessionInterrupted):
        await store.release()
    assert row_count(db, table) == 0


# -- conflicts between two stores of one session ----------------------------------------


async def read_twice(provider: MySQLSessionProvider, sid: str) -> tuple[SessionStore, SessionStore]:
    return await provider.read(sid), await provider.read(sid)


async def test_two_writers_changing_different_keys_both_persist(
    provider: MySQLSessionProvider, statements: StatementCounter, db: Database, table: str
) -> None:
    sid = await make_session(provider, a=0, b=0, c="kept")
    first, second = await read_twice(provider, sid)
    first["a"] = 1
    second["b"] = 2
    assert await first.release() is SaveResult.UPDATED
    statements.start()
    assert await second.release() is SaveResult.UPDATED
    assert statements.delta() == {"update": 2, "select": 1}  # lost, re-read, merged, won
    assert dict(await provider.read(sid)) == {"a": 1, "b": 2, "c": "kept"}
    assert stored_row(db, table, sid)[2] == 3  # type: ignore[index]


async def test_two_writers_changing_the_same_key_the_later_release_wins(
    provider: MySQLSessionProvider,
) -> None:
    sid = await make_session(provider, a=0, other="kept")
    first, second = await read_twice(provider, sid)
    second["a"] = "second"
    first["a"] = "first"
    assert await second.release() is SaveResult.UPDATED
    assert await first.release() is SaveResult.UPDATED
    assert dict(await provider.read(sid)) == {"a": "first", "other": "kept"}


async def test_a_delete_and_a_concurrent_set_both_survive(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, x=1, keep=True)
    deleter, setter = await read_twice(provider, sid)
    del deleter["x"]
    setter["y"] = 2
    assert await deleter.release() is SaveResult.UPDATED
    assert await setter.release() is SaveResult.UPDATED
    assert dict(await provider.read(sid)) == {"keep": True, "y": 2}


async def test_a_set_and_a_concurrent_delete_both_survive(provider: MySQLSessionProvider) -> None:
    sid = await make_session(provider, x=1, keep=True)
    deleter, setter = await read_twice(provider, sid)
    del deleter["x"]
    setter["y"] = 2
    assert await setter.release() is SaveResult.UPDATED
    assert await deleter.release() is SaveResult.UPDATED
    assert dict(await provider.read(sid)) == {"keep": True, "y": 2}


async def test_a_conflicting_writer_whose_change_is_already_there_writes_nothing(
    provider: MySQLSessionProvider, statements: StatementCounter
) -> None:
    sid = await make_session(provider, a=0)
    first, second = await read_twice(provider, sid)
    first["a"] = 1
    second["a"] = 1
    assert await first.release() is SaveResult.UPDATED
    statements.start()
    assert await second.release() is SaveResult.NOTHING
    assert statements.delta() == {"update": 1, "select": 1}
    assert dict(await provider.read(sid)) == {"a": 1}


async def test_a_writer_whose_row_was_destroyed_meanwhile_is_interrupted_and_not_recreated(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store["cart"] = [1, 2]
    assert await provider.destroy(sid)
    with pytest.raises(SessionInterrupted):
        await store.release()
    assert row_count(db, table) == 0
    assert stored_row(db, table, sid) is None


async def test_an_interrupted_store_is_left_empty_and_never_reuses_its_id(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    store = await provider.read(sid)
    store["cart"] = [1]
    await provider.destroy(sid)
    with pytest.raises(SessionInterrupted):
        await store.release()
    assert dict(store) == {} and store.destroyed
    store["later"] = 1
    assert await store.release() is SaveResult.CREATED
    assert store.session_id != sid
    assert stored_row(db, table, sid) is None


async def test_a_writer_whose_row_was_regenerated_meanwhile_is_interrupted_and_the_old_id_stays_dead(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    old = await make_session(provider, user="ada")
    store = await provider.read(old)
    store["cart"] = [1]
    rotated = await provider.read(old)
    await rotated.regenerate()
    new = rotated.session_id
    with pytest.raises(SessionInterrupted):
        await store.release()
    assert not await provider.exist(old)
    assert is_tombstone(db, table, old)
    assert row_count(db, table) == 1
    assert dict(await provider.read(new)) == {"user": "ada"}


async def test_a_touch_of_a_destroyed_row_does_not_recreate_it(
    provider: MySQLSessionProvider, clock: FakeClock, db: Database, table: str
) -> None:
    sid = await make_session(provider, user="ada")
    clock.advance(provider.touch_after)
    store = await provider.read(sid)
    await provider.destroy(sid)
    assert await store.release() is SaveResult.NOTHING
    assert row_count(db, table) == 0


async def test_regenerate_of_a_session_ended_meanwhile_is_interrupted_and_not_recreated(
    provider: MySQLSessionProvider, db: Database, table: str
) -> None:
    sid = await make_session(provider, owner="ada", user="ada")
    store = await provider.read(sid)
    assert await provider.destroy_owner("ada") == 1  # "log out everywhere" lands first
    with pytest.raises(SessionInterrupted):
        await store.regenerate()
    assert await store.release() is SaveResult.NOTHING
    assert row_count(db, table) == 0
    assert await provider.sessions_of("ada") == []
