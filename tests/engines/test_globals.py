"""Server-wide objects: roles (PostgreSQL) and users/grants (MySQL) stored with a backup."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, my_admin, pg_admin
from tests.engines.cases import MariaDBCase, PostgresCase
from vaultflow.engines.base import GLOBALS_STREAM
from vaultflow.engines.mysql.accounts import strip_authentication
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore


def repo_at(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def globals_text(repo: Repository, sid: str) -> str:
    manifest = repo.load_manifest(sid)
    stream = next(s for s in manifest.streams if s.name == GLOBALS_STREAM)
    out = bytearray()

    class Sink:
        def write(self, data: bytes) -> int:
            out.extend(data)
            return len(data)

    repo.read_stream(sid, stream, Sink(), manifest.chain)
    return out.decode()


def test_mysql_users_and_grants_round_trip(mariadb_available: None, repo_path: Path, tmp_path: Path) -> None:
    case = MariaDBCase()
    user = f"vft_{uuid.uuid4().hex[:8]}"
    try:
        source = case.create_source(tmp_path)
        db = source.rsplit("/", 1)[1]
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'10.%%' IDENTIFIED BY %s", ("hunter2-secret",))
            cur.execute(f"GRANT SELECT, INSERT ON `{db}`.* TO '{user}'@'10.%'")
        repo = repo_at(repo_path)
        sid = new_object_id()
        backup_database(case.engine(source), repo, BackupRequest(include_globals=True), snapshot_id=sid)
        text = globals_text(repo, sid)
        assert f"CREATE USER IF NOT EXISTS `{user}`@`10.%`" in text and f"ON `{db}`.* TO `{user}`@`10.%`" in text
        assert "IDENTIFIED" not in text and "PASSWORD '" not in text, "password hashes stored without asking"
        with_pw = new_object_id()
        backup_database(case.engine(source), repo, BackupRequest(include_globals=True, globals_passwords=True),
                        snapshot_id=with_pw)
        assert "IDENTIFIED BY PASSWORD '*" in globals_text(repo, with_pw)

        with my_admin() as c, c.cursor() as cur:  # a "fresh server": the user is gone
            cur.execute(f"DROP USER '{user}'@'10.%'")
        target = case.new_target(tmp_path)
        restore_snapshot(repo, sid, case.engine(target), RestoreRequest(include_globals=True))
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"SHOW GRANTS FOR '{user}'@'10.%'")
            grants = " ".join(str(r[0]) for r in cur.fetchall())
        assert f"GRANT SELECT, INSERT ON `{db}`.*" in grants
        assert case.engine(target).table_stats() == case.engine(source).table_stats()

    finally:
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'10.%'")
        case.cleanup()


def test_postgres_roles_round_trip_without_passwords(pg_available: None, repo_path: Path, tmp_path: Path) -> None:
    case = PostgresCase()
    role = f"vft_role_{uuid.uuid4().hex[:8]}"
    try:
        source = case.create_source(tmp_path)
        with pg_admin() as c:
            c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pg-secret' CONNECTION LIMIT 7")
        repo = repo_at(repo_path)
        sid = new_object_id()
        backup_database(case.engine(source), repo, BackupRequest(include_globals=True), snapshot_id=sid)
        text = globals_text(repo, sid)
        assert f"CREATE ROLE {role};" in text and "CONNECTION LIMIT 7" in text and "SCRAM" not in text
        with pg_admin() as c:
            c.execute(f"DROP ROLE {role}")
        target = case.new_target(tmp_path)
        restore_snapshot(repo, sid, case.engine(target), RestoreRequest(include_globals=True))
        with pg_admin() as c:
            row = c.execute("SELECT rolcanlogin, rolconnlimit, rolpassword IS NULL FROM pg_authid WHERE rolname = %s",
                            (role,)).fetchone()
        assert row == (True, 7, True)
        assert case.engine(target).table_stats() == case.engine(source).table_stats()
    finally:
        with pg_admin() as c:
            c.execute(f"DROP ROLE IF EXISTS {role}")
        case.cleanup()


def test_restore_globals_from_a_snapshot_without_them(pg_available: None, repo_path: Path, tmp_path: Path) -> None:
    case = PostgresCase()
    try:
        source = case.create_source(tmp_path)
        sid = new_object_id()
        backup_database(case.engine(source), repo_at(repo_path), snapshot_id=sid)
        with pytest.raises(InputError, match="no server-wide objects"):
            restore_snapshot(repo_at(repo_path), sid, case.engine(case.new_target(tmp_path)),
                             RestoreRequest(include_globals=True))
    finally:
        case.cleanup()


@pytest.mark.parametrize("statement, expected", [
    ("CREATE USER `a`@`%` IDENTIFIED BY PASSWORD '*ABC'", "CREATE USER `a`@`%`"),
    ("GRANT USAGE ON *.* TO `a`@`%` IDENTIFIED BY PASSWORD '*AB''C' WITH MAX_QUERIES_PER_HOUR 5",
     "GRANT USAGE ON *.* TO `a`@`%` WITH MAX_QUERIES_PER_HOUR 5"),
    ("CREATE USER `r`@`localhost` IDENTIFIED VIA mysql_native_password USING 'x' OR unix_socket",
     "CREATE USER `r`@`localhost`"),
    ("CREATE USER 'x'@'%' IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$x' REQUIRE NONE ACCOUNT UNLOCK",
     "CREATE USER 'x'@'%' REQUIRE NONE ACCOUNT UNLOCK"),
    ("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
     "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
])
def test_strip_authentication(statement: str, expected: str) -> None:
    assert strip_authentication(statement) == expected


def test_a_refused_account_statement_does_not_show_its_password_hash(mariadb_available: None) -> None:
    """A MySQL 8 account (hash as a hex literal) restored into MariaDB is a syntax error whose
    message quotes the statement from the hash on; the error must not carry the hash."""
    from vaultflow.engines.mysql.accounts import GLOBALS_FORMAT
    from vaultflow.engines.mysql.config import MySQLConnection
    from vaultflow.engines.mysql.engine import MySQLEngine
    from vaultflow.errors import ToolFailed
    from vaultflow.repository.manifest import StreamManifest

    secret = "0x" + uuid.uuid4().hex.upper() * 2
    user = f"vft_{uuid.uuid4().hex[:8]}"
    script = f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED WITH 'caching_sha2_password' AS {secret};\n"
    stream = StreamManifest(name=GLOBALS_STREAM, format=GLOBALS_FORMAT, size=len(script), blake3="", chunks=[])
    engine = MySQLEngine(MySQLConnection(database="mysql"))
    try:
        with pytest.raises(ToolFailed) as err:
            engine.restore_globals(stream, lambda _stream, sink: sink.write(script.encode()))
    finally:
        with my_admin() as c, c.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
    assert user in err.value.line() and "not shown" in err.value.line()
    assert secret not in err.value.line() and secret[2:] not in err.value.line()
