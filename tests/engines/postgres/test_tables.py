"""PostgreSQL per-table streams: parallel dump and restore, table subsets, single-table restore."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PASSPHRASE
from tests.engines.cases import PostgresCase
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("pg_available")


@pytest.fixture
def case() -> Iterator[PostgresCase]:
    c = PostgresCase()
    yield c
    c.cleanup()


def repo_at(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def test_parallel_dump_and_restore_equal_serial(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    serial = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    parallel = backup_database(case.engine(url), repo, BackupRequest(jobs=3), snapshot_id=new_object_id())
    assert parallel.tables == serial.tables
    assert [(s.name, s.digest) for s in parallel.streams if "table" in s.meta] == \
        [(s.name, s.digest) for s in serial.streams if "table" in s.meta]
    target = case.new_target(tmp_path)
    restore_snapshot(repo, parallel.id, case.engine(target), RestoreRequest(jobs=3))
    assert case.engine(target).table_stats() == serial.tables
    assert case.schema(target) == case.schema(url)


def test_rows_are_streamed_in_primary_key_order(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    m = backup_database(case.engine(url), repo_at(repo_path), snapshot_id=new_object_id())
    orders = {s.name: s for s in m.streams}["table/public.orders"]
    assert orders.meta["order"] == "pk"
    assert {s.name: s for s in m.streams}["table/public.events_2025"].meta["order"] == "heap"  # no primary key


def test_include_and_exclude_tables(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    only = backup_database(case.engine(url), repo, BackupRequest(include_tables=["orders", "cust*"]),
                           snapshot_id=new_object_id())
    assert sorted(t.name for t in only.tables) == ["customers", "orders"]
    without = backup_database(case.engine(url), repo, BackupRequest(exclude_tables=["public.events_*"]),
                              snapshot_id=new_object_id())
    assert "events_2025" not in {t.name for t in without.tables} and "orders" in {t.name for t in without.tables}
    with pytest.raises(InputError, match="matches the include/exclude patterns"):
        backup_database(case.engine(url), repo, BackupRequest(include_tables=["nope*"]), snapshot_id=new_object_id())

    target = case.new_target(tmp_path)
    restore_snapshot(repo, only.id, case.engine(target))
    stats = {t.name: t for t in case.engine(target).table_stats()}
    assert stats["orders"] == {t.name: t for t in only.tables}["orders"]
    assert stats["events_2025"].rows == 0  # the schema is complete; the rows were not backed up


def test_restore_chosen_tables_only(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    m = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    target = case.new_target(tmp_path)
    restore_snapshot(repo, m.id, case.engine(target), RestoreRequest(tables=["public.customers", "public.orders"]))
    got = {t.qualified: t for t in case.engine(target).table_stats()}
    want = {t.qualified: t for t in m.tables}
    assert got["public.orders"] == want["public.orders"] and got["public.customers"] == want["public.customers"]
    assert got["public.events_2025"].rows == 0
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.rsplit("/", 1)[1]) as c:
        assert c.execute("SELECT count(*) FROM order_totals").fetchone() == (3000,)
    with pytest.raises(InputError, match="has no table public.nope"):
        restore_snapshot(repo, m.id, case.engine(case.new_target(tmp_path)), RestoreRequest(tables=["public.nope"]))


def test_export_restores_with_psql_alone(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    from vaultflow.operations.restore import export_snapshot

    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    m = backup_database(case.engine(url), repo, BackupRequest(jobs=2), snapshot_id=new_object_id())
    out = tmp_path / "dump.sql"
    export_snapshot(repo, m.id, out)
    target = case.new_target(tmp_path)
    db = target.rsplit("/", 1)[1]
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", db,
                    "-f", str(out)], check=True, capture_output=True)
    assert case.engine(target).table_stats() == m.tables


def test_restoring_a_child_table_without_its_parent(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    m = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    target = case.new_target(tmp_path)
    restore_snapshot(repo, m.id, case.engine(target), RestoreRequest(tables=["public.orders"]))  # customers stay empty
    got = {t.qualified: t for t in case.engine(target).table_stats()}
    assert got["public.orders"] == {t.qualified: t for t in m.tables}["public.orders"]
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=target.rsplit("/", 1)[1]) as c:
        fks = c.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()
        indexes = c.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer'").fetchone()
    assert fks == (0,) and indexes == (1,)  # the dangling foreign key is left out, the rest is there


FK_ERROR = ('pg_restore: error: could not execute query: ERROR:  insert or update on table "orders" violates '
            'foreign key constraint "orders_customer_id_fkey"\nDETAIL:  Key (customer_id)=(7) is not present.\n'
            "Command was: ALTER TABLE ONLY public.orders ADD CONSTRAINT orders_customer_id_fkey ...;\n")
INDEX_ERROR = ('pg_restore: error: could not execute query: ERROR:  could not create unique index "orders_pkey"\n'
               "Command was: ALTER TABLE ONLY public.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id);\n")


@pytest.mark.parametrize(("stderr", "accepted"), [
    (FK_ERROR + "pg_restore: warning: errors ignored on restore: 1", True),
    (FK_ERROR * 2 + "pg_restore: warning: errors ignored on restore: 2", True),
    (FK_ERROR + INDEX_ERROR + "pg_restore: warning: errors ignored on restore: 2", False),
    (FK_ERROR + "pg_restore: warning: errors ignored on restore: 3", False),  # some errors fell off the tail
    ("pg_restore: error: connection to server lost", False),
])
def test_restore_of_chosen_tables_forgives_only_foreign_keys(stderr: str, accepted: bool) -> None:
    from vaultflow.engines.postgres.restore import _only_foreign_key_errors

    assert _only_foreign_key_errors(stderr) is accepted


def test_a_failing_table_stops_the_other_dumps(pg_database, repo_path: Path) -> None:  # type: ignore[no-untyped-def]
    from contextlib import contextmanager
    from dataclasses import replace
    from functools import partial

    from tests.conftest import pg_url
    from vaultflow.engines import engine_from_url
    from vaultflow.errors import VaultflowError

    name = pg_database()
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
        c.execute("CREATE TABLE a_small (id int PRIMARY KEY)")
        c.execute("CREATE TABLE big (id int PRIMARY KEY, body text)")
        c.execute("INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 150000) g")
    engine = engine_from_url(pg_url(name))
    real_open_dump = engine.open_dump

    # Connected up front: on a busy machine a new connection takes long enough for the big
    # dump to get far before the failure the test is about even happens.
    dropper = psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True)

    def drop_then_open(source):  # type: ignore[no-untyped-def]
        dropper.execute("DROP TABLE a_small")  # its COPY now fails at once
        return source.open()

    @contextmanager
    def open_dump(**kwargs):  # type: ignore[no-untyped-def]
        with real_open_dump(**kwargs) as session:
            session.sources = [replace(s, open=partial(drop_then_open, s)) if s.table == ("public", "a_small") else s
                               for s in session.sources]
            yield session

    engine.open_dump = open_dump  # type: ignore[method-assign]
    seen: list[int] = []
    with dropper, pytest.raises(VaultflowError, match="a_small") as err:
        backup_database(engine, repo_at(repo_path), BackupRequest(jobs=2), snapshot_id=new_object_id(),
                        progress=lambda read, stored: seen.append(read))
    assert "stopped" not in str(err.value)  # the first failure is reported, not the aborted stream
    big_stream_bytes = 150000 * (6 + 1 + 256 + 1)
    assert max(seen, default=0) < big_stream_bytes / 2, "the big table's dump ran on after the failure"
    assert repo_at(repo_path).snapshot_ids() == []


def test_restore_sweeps_staging_databases_of_killed_restores(case: PostgresCase, repo_path: Path,
                                                              tmp_path: Path) -> None:
    import time

    from tests.conftest import drop_pg_database, pg_admin

    old = f"vf_restore_{int(time.time()) - 13 * 3600}_{new_object_id()[:8]}"  # named before targets were
    old_named = f"vf_restore_{int(time.time()) - 13 * 3600}_{new_object_id()[:8]}_vft_gone"
    recent = f"vf_restore_{int(time.time()) - 60}_{new_object_id()[:8]}_vft_running"
    with pg_admin() as c:
        for name in (old, old_named, recent):
            c.execute(f'CREATE DATABASE "{name}"')
    try:
        url = case.create_source(tmp_path)
        repo = repo_at(repo_path)
        m = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
        restore_snapshot(repo, m.id, case.engine(case.new_target(tmp_path)))
        with pg_admin() as c:
            left = {r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vf_restore_%'")}
        assert old not in left and old_named not in left
        assert recent in left  # a recent one may belong to a restore still running
    finally:
        for name in (old, old_named, recent):
            drop_pg_database(name)


def test_side_databases_name_their_target_within_63_bytes() -> None:
    from vaultflow.engines.postgres.restore import side_database_name

    assert side_database_name("vf_restore_1_0123abcd", "app") == "vf_restore_1_0123abcd_app"
    cut = side_database_name("vf_old_0123456789ab", "é" * 40)
    assert len(cut.encode()) <= 63 and cut.startswith("vf_old_0123456789ab_éé")


def test_the_timeout_is_one_deadline_for_the_whole_run(case: PostgresCase, tmp_path: Path) -> None:
    """A tool started late gets only the time left of the run, not a fresh timeout."""
    import time

    from vaultflow.errors import TransientError

    url = case.create_source(tmp_path)
    with case.engine(url).open_dump(timeout=2.0) as session:
        time.sleep(2.2)
        with pytest.raises(TransientError, match="ran past the run's 2 s deadline"):
            with session.sources[0].open() as stream:
                stream.read()


def test_restore_progress_counts_all_streams_with_jobs(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    m = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    seen: list[int] = []
    restore_snapshot(repo, m.id, case.engine(case.new_target(tmp_path)), RestoreRequest(jobs=3),
                     progress=lambda read, _: seen.append(read))
    assert seen == sorted(seen) and seen[-1] == m.logical_size


def test_an_unchanged_schema_dumps_to_the_same_bytes(case: PostgresCase, repo_path: Path, tmp_path: Path) -> None:
    """pg_dump stamps its archives with the time; vaultflow fixes it, so unchanged archives dedupe."""
    import time

    from vaultflow.engines.postgres.archive_reader import _with_fixed_time

    url = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    first = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    time.sleep(1.1)
    second = backup_database(case.engine(url), repo, snapshot_id=new_object_id())
    for name in ("schema", "data-extra"):
        assert first.stream(name).digest == second.stream(name).digest
    target = case.new_target(tmp_path)
    restore_snapshot(repo, second.id, case.engine(target))  # pg_restore takes the fixed header
    assert case.engine(target).table_stats() == second.tables
    assert _with_fixed_time(b"PGDMP\x02", (0,) * 7) == b"PGDMP\x02"  # unknown layouts pass through
