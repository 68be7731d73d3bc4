"""A PostgreSQL snapshot carries its database's encoding, locale, settings, comment and
connection limit; a restore creates the database with them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PASSPHRASE, drop_pg_database, pg_admin, pg_url
from vaultflow.drill.run import run_drill
from vaultflow.engines import engine_from_url
from vaultflow.engines.postgres.database import DatabaseProperties, split_setting_list
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.manifest import StreamManifest
from vaultflow.repository.repository import ByteSink
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

PROPERTIES = """
SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, to_jsonb(d) ->> 'datlocprovider',
       coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'),
       d.datconnlimit, shobj_description(d.oid, 'pg_database'),
       (SELECT array_agg(s ORDER BY s) FROM pg_db_role_setting r, unnest(r.setconfig) s
         WHERE r.setdatabase = d.oid AND r.setrole = 0),
       (SELECT array_agg(format('%%s/%%s/%%s', a.grantee::regrole, a.privilege_type, a.is_grantable) ORDER BY 1)
          FROM aclexplode(d.datacl) a),
       (SELECT array_agg(r.setrole::regrole || ':' || u.s ORDER BY 1) FROM pg_db_role_setting r,
               unnest(r.setconfig) u(s) WHERE r.setdatabase = d.oid AND r.setrole <> 0)
FROM pg_database d WHERE d.datname = %s
"""


@pytest.fixture
def databases(pg_available: None) -> Iterator[Callable[[str], str]]:
    """Names for databases of this test (created by the caller or by a restore); all dropped."""
    names: list[str] = []

    def name(tag: str) -> str:
        names.append(f"vft_dbprops_{tag}_{uuid.uuid4().hex[:8]}")
        return names[-1]
    yield name
    for n in names:
        drop_pg_database(n)


def create(name: str, options: str, *statements: str) -> None:
    with pg_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 " + options).format(sql.Identifier(name)))
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
        for s in statements:
            c.execute(s)


def properties(name: str) -> tuple[Any, ...]:
    with pg_admin() as admin:
        row = admin.execute(PROPERTIES, (name,)).fetchone()
    assert row is not None
    return tuple(row)


def keys(name: str) -> list[str]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name) as c:
        return [r[0] for r in c.execute("SELECT k FROM words ORDER BY k")]


@pytest.fixture
def reader_role(pg_available: None) -> Iterator[str]:
    name = f"vft_reader_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield name
    with pg_admin() as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_encoding_locale_settings_comment_grants_and_limit_round_trip(
        reader_role: str, databases: Callable[[str], str], repo_path: Path) -> None:
    source, target = databases("src"), databases("dst")
    create(source, "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
           f'REVOKE ALL ON DATABASE "{source}" FROM PUBLIC',
           f'GRANT CONNECT ON DATABASE "{source}" TO "{reader_role}" WITH GRANT OPTION',
           f'ALTER ROLE "{reader_role}" IN DATABASE "{source}" SET search_path = reports, public',
           "CREATE TABLE words (k text PRIMARY KEY, n int)",
           "INSERT INTO words VALUES ('café', 1), ('Zoë', 2), ('naïve', 3)",
           f'ALTER DATABASE "{source}" SET search_path = "$user", public, "My ""Schema"""',
           f'ALTER DATABASE "{source}" SET work_mem = \'8MB\'',
           # would stop the load if it were set before the rows are in
           f'ALTER DATABASE "{source}" SET default_transaction_read_only = on',
           f"COMMENT ON DATABASE \"{source}\" IS 'orders, 2026'",
           f'ALTER DATABASE "{source}" CONNECTION LIMIT 50')
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    m = backup_database(engine_from_url(pg_url(source)), repo, snapshot_id=new_object_id())
    restore_snapshot(repo, m.id, engine_from_url(pg_url(target)))

    got, want = properties(target), properties(source)
    assert got == want and got[0] == "LATIN1" and got[5] == 50 and got[6] == "orders, 2026"
    assert 'search_path="$user", public, "My ""Schema"""' in got[7]
    assert got[9] == [f"{reader_role}:search_path=reports, public"]
    assert f"{reader_role}/CONNECT/t" in got[8] and not any(g.startswith("-/") for g in got[8])
    assert keys(target) == keys(source) and "café" in keys(target)
    assert engine_from_url(pg_url(target)).table_stats() == m.tables


def test_icu_collation_keeps_the_key_order_of_the_backup(databases: Callable[[str], str], repo_path: Path) -> None:
    source, target, plain = databases("icu"), databases("icu_dst"), databases("plain")
    create(source, "ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
           "CREATE TABLE words (k text PRIMARY KEY, n int)",
           "INSERT INTO words SELECT w, i FROM unnest(ARRAY['Bär', 'apfel', 'Äpfel', 'zug', 'Zebra']) "
           "WITH ORDINALITY AS t(w, i)")
    assert keys(source)[:2] == ["apfel", "Äpfel"]  # the German order, not the bytes' ('B' < 'a' < 'Ä')
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    m = backup_database(engine_from_url(pg_url(source)), repo, snapshot_id=new_object_id())

    restore_snapshot(repo, m.id, engine_from_url(pg_url(target)))
    assert properties(target)[3:5] == ("i", "de")
    assert engine_from_url(pg_url(target)).table_stats() == m.tables  # rows in the same key order

    drill = run_drill(repo, m.id, engine_from_url(pg_url(target)))
    assert drill.passed, drill.summary()

    restore_snapshot(repo, m.id, engine_from_url(pg_url(plain)), RestoreRequest(server_locale=True))
    assert properties(plain)[3] == "c"
    assert keys(plain) != keys(source), "the server's default locale should sort these keys otherwise"


def test_a_locale_the_server_lacks_ends_in_one_line_and_leaves_nothing(databases: Callable[[str], str],
                                                                      repo_path: Path) -> None:
    source, target = databases("loc"), databases("loc_dst")
    create(source, "", "CREATE TABLE words (k text PRIMARY KEY, n int)", "INSERT INTO words VALUES ('a', 1)")
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    m = backup_database(engine_from_url(pg_url(source)), repo, snapshot_id=new_object_id())

    def foreign(s: StreamManifest) -> StreamManifest:
        if "database" not in s.meta:
            return s
        props = DatabaseProperties.from_meta(s.meta["database"])
        alien = dataclasses.replace(props, collate="xx_XX.UTF-8", ctype="xx_XX.UTF-8")
        return s.model_copy(update={"meta": {**s.meta, "database": alien.to_meta()}})

    def read(stream: StreamManifest, sink: ByteSink) -> None:
        repo.read_stream(m.id, stream, sink, m.chain)

    with pg_admin() as admin:
        before = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    engine = engine_from_url(pg_url(target))
    with pytest.raises(InputError) as err:
        engine.restore([foreign(s) for s in m.streams], read)
    line = err.value.line()
    assert target in line and "xx_XX.UTF-8" in line and "--server-locale" in line
    with pg_admin() as admin:
        assert {r[0] for r in admin.execute("SELECT datname FROM pg_database")} == before, "a database was left"
    engine.restore([foreign(s) for s in m.streams], read, server_locale=True)
    assert keys(target) == ["a"]


@pytest.mark.parametrize("stored, elements", [
    ('"$user", public', ["$user", "public"]),
    ('public', ["public"]),
    ('"My ""Schema""", b ,c', ['My "Schema"', "b", "c"]),
    ('"a,b", c', ["a,b", "c"]),
    ("", []),
])
def test_list_settings_split_as_postgresql_stores_them(stored: str, elements: list[str]) -> None:
    assert split_setting_list(stored) == elements


def test_create_options_refuse_what_the_target_version_lacks() -> None:
    icu = DatabaseProperties(encoding="UTF8", collate="C", ctype="C", locale_provider="icu", locale="de")
    with pytest.raises(ValueError, match="PostgreSQL 14 has no icu locale provider"):
        icu.create_options(14)
    rules = DatabaseProperties(encoding="UTF8", collate="C", ctype="C", locale_provider="icu", locale="de",
                               icu_rules="&a < b")
    with pytest.raises(ValueError, match="needs 16"):
        rules.create_options(15)
    with pytest.raises(ValueError, match="needs 17"):
        DatabaseProperties(encoding="UTF8", collate="C", ctype="C", locale_provider="builtin",
                           locale="C.UTF-8").create_options(16)
    libc = DatabaseProperties(encoding="UTF8", collate="C", ctype="C")
    assert "LOCALE_PROVIDER" not in repr(libc.create_options(14)) and "libc" in repr(libc.create_options(15))


def test_a_missing_role_skips_its_grant_owner_and_setting_with_a_warning(
        databases: Callable[[str], str], repo_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source, target = databases("roles"), databases("roles_dst")
    create(source, "", "CREATE TABLE words (k text PRIMARY KEY, n int)", "INSERT INTO words VALUES ('a', 1)",
           f'ALTER DATABASE "{source}" SET work_mem = \'8MB\'')
    repo = Repository.open(LocalStore(repo_path), PASSPHRASE)
    m = backup_database(engine_from_url(pg_url(source)), repo, snapshot_id=new_object_id())

    def gone_role(s: StreamManifest) -> StreamManifest:
        if "database" not in s.meta:
            return s
        props = dataclasses.replace(DatabaseProperties.from_meta(s.meta["database"]), owner="vft_no_such_role",
                                    grants=[["vft_no_such_role", "CONNECT", False]],
                                    role_settings=[["vft_no_such_role", "work_mem=4MB"]])
        return s.model_copy(update={"meta": {**s.meta, "database": props.to_meta()}})

    def read(stream: StreamManifest, sink: ByteSink) -> None:
        repo.read_stream(m.id, stream, sink, m.chain)

    engine_from_url(pg_url(target)).restore([gone_role(s) for s in m.streams], read)
    assert keys(target) == ["a"] and properties(target)[7] == ["work_mem=8MB"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for what in ("owner vft_no_such_role", "CONNECT for vft_no_such_role", "of role vft_no_such_role"):
        assert what in warned, warned
