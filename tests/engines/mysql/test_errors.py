"""MySQL/MariaDB bad inputs: each ends in one clear error, no snapshot, no target touched."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE, my_admin
from tests.engines.cases import MariaDBCase
from vaultflow.engines import engine_from_url
from vaultflow.engines.mysql import dump as mysql
from vaultflow.engines.mysql import restore as mysql_restore
from vaultflow.engines.mysql.config import MySQLConnection
from vaultflow.engines.mysql.engine import MySQLEngine
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    TargetNotEmpty,
    VaultflowError,
)
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.repository.manifest import StreamManifest, TableStats
from vaultflow.repository.repository import ByteSink
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.usefixtures("mariadb_available")
SECRET = "s3cr3t-'\"\\-pw"


@pytest.fixture
def case() -> Iterator[MariaDBCase]:
    c = MariaDBCase()
    yield c
    c.cleanup()


@pytest.fixture
def login_user() -> Iterator[str]:
    """A user with a password (quotes and a backslash in it) allowed everything."""
    name = f"vft_{uuid.uuid4().hex[:8]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (SECRET,))
        cur.execute(f"GRANT ALL ON *.* TO '{name}'@'%'")
    yield name
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")


def repo_at(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def as_user(url: str, user: str, password: str) -> MySQLEngine:
    return MySQLEngine(MySQLConnection(user=user, password=SecretStr(password), database=url.rsplit("/", 1)[1]))


def test_password_reaches_the_tools_only_in_a_private_option_file(
        case: MariaDBCase, login_user: str, repo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], int, str]] = []
    real = mysql.ToolProcess

    def recording(argv: list[str], **kwargs: Any) -> Any:
        option = next(a.split("=", 1)[1] for a in argv if a.startswith("--defaults-extra-file="))
        seen.append((list(argv), stat.S_IMODE(os.stat(option).st_mode), Path(option).read_text()))
        return real(argv, **kwargs)

    monkeypatch.setattr(mysql, "ToolProcess", recording)
    monkeypatch.setattr(mysql_restore, "ToolProcess", recording)
    source = case.create_source(tmp_path)
    sid = new_object_id()
    manifest = backup_database(as_user(source, login_user, SECRET), repo_at(repo_path), snapshot_id=sid)
    target = case.new_target(tmp_path)
    restore_snapshot(repo_at(repo_path), sid, as_user(target, login_user, SECRET))
    tools = list(seen)
    assert len(tools) == 2  # the dump and the client
    assert case.engine(target).table_stats() == manifest.tables
    for argv, mode, text in tools:
        assert not any(SECRET in a for a in argv) and mode == 0o600 and "password=" in text
        assert not os.path.exists(argv[1].split("=", 1)[1]), "the option file outlived the tool"


def test_wrong_password(case: MariaDBCase, login_user: str, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    with pytest.raises(AuthenticationFailed) as err:
        backup_database(as_user(source, login_user, "wrong-" + SECRET), repo_at(repo_path), snapshot_id=new_object_id())
    assert login_user in err.value.line() and SECRET not in err.value.line() and "wrong-" not in err.value.line()
    assert repo_at(repo_path).snapshot_ids() == []


def test_unreachable_host_is_transient(repo_path: Path) -> None:
    engine = engine_from_url("mysql://root@127.0.0.1:1/anything")
    with pytest.raises(ConnectionFailed) as err:
        backup_database(engine, repo_at(repo_path), snapshot_id=new_object_id())
    assert err.value.transient and "127.0.0.1:1" in err.value.line()


def test_missing_database(repo_path: Path) -> None:
    engine = engine_from_url(f"mysql://root@127.0.0.1:3306/vft_missing_{uuid.uuid4().hex[:6]}")
    with pytest.raises(DatabaseNotFound) as err:
        backup_database(engine, repo_at(repo_path), snapshot_id=new_object_id())
    assert "vft_missing_" in err.value.line() and err.value.exit_code == 2
    assert repo_at(repo_path).snapshot_ids() == []


def test_view_whose_definer_is_gone_fails_the_backup_naming_it(case: MariaDBCase, repo_path: Path,
                                                              tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    gone = f"vft_gone_{uuid.uuid4().hex[:6]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE USER '{gone}'@'%'")
        cur.execute(f"GRANT SELECT ON *.* TO '{gone}'@'%'")
    case.execute(source, f"CREATE DEFINER='{gone}'@'%' VIEW stale AS SELECT id FROM customers")
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"DROP USER '{gone}'@'%'")
    with pytest.raises(InputError) as err:
        backup_database(case.engine(source), repo_at(repo_path), snapshot_id=new_object_id())
    line = err.value.line()
    assert "`stale`" in line and gone in line and "DEFINER" in line
    assert repo_at(repo_path).snapshot_ids() == []


def test_non_empty_target_is_refused_and_untouched(case: MariaDBCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    sid = new_object_id()
    backup_database(case.engine(source), repo_at(repo_path), snapshot_id=sid)
    target = case.create_source(tmp_path)
    case.execute(target, "INSERT INTO ledger_a (v) VALUES (42)")
    before = case.engine(target).table_stats()
    with pytest.raises(TargetNotEmpty) as err:
        restore_snapshot(repo_at(repo_path), sid, case.engine(target))
    assert "--replace" in err.value.line()
    assert case.engine(target).table_stats() == before
    restore_snapshot(repo_at(repo_path), sid, case.engine(target), RestoreRequest(replace=True))
    assert case.engine(target).table_stats() == case.engine(source).table_stats()


def _databases(case: MariaDBCase) -> set[str]:
    """The case's databases on the server, and the staging copies of them (their names end in
    the target's); other tests running meanwhile have their own."""
    with my_admin() as c, c.cursor() as cur:
        cur.execute("SHOW DATABASES")
        names = {str(r[0]) for r in cur.fetchall()}
    return {d for d in names if any(d == n or d.endswith(f"_{n}") for n in case.created)}


def test_failed_restore_leaves_the_target_as_it_was(case: MariaDBCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    sid = new_object_id()
    manifest = backup_database(case.engine(source), repo_at(repo_path), snapshot_id=sid)

    def broken_read(stream: StreamManifest, sink: ByteSink) -> None:
        sink.write(b"CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\n")
        sink.write(b"THIS IS NOT SQL;\n")

    existing = case.create_source(tmp_path)
    before = case.engine(existing).table_stats()
    databases = _databases(case)
    for target, replace in ((existing, True), (case.new_target(tmp_path), False)):
        with pytest.raises(VaultflowError) as err:
            case.engine(target).restore(manifest.streams, broken_read, replace=replace)
        assert "restoring into database" in err.value.line() and "syntax" in err.value.line()
        assert _databases(case) == databases, "a staging or half-restored database was left behind"
    assert case.engine(existing).table_stats() == before


@pytest.mark.parametrize("url, message", [
    ("mysql://root:pw@127.0.0.1:3306/db", "contains a password"),
    ("mysql://root@127.0.0.1:3306", "names no database"),
    ("mariadb://root@127.0.0.1:3306/db?ssl=1", "take no parameters"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        engine_from_url(url)


def test_mariadb_scheme_is_mysql() -> None:
    engine = engine_from_url("mariadb://backup@db.example:3307/shop")
    assert isinstance(engine, MySQLEngine) and engine.server_label() == "db.example:3307"
    assert engine.conn.user == "backup" and engine.database == "shop"


def test_stats_tap_reads_mysql_one_line_inserts_in_any_block_size() -> None:
    dump = (b"CREATE TABLE `t` (\n  `a` text\n);\n"
            b"INSERT INTO `t` VALUES (1,'x),(y'),(2,'it\\'s \\\\'),(3,NULL);\n"
            b"INSERT INTO `t` VALUES (4,'(');\n"
            b"CREATE TABLE `e` (\n  `a` int\n);\n"
            b"DELIMITER ;;\nINSERT INTO `t` VALUES (9);\nDELIMITER ;\n"
            b"CREATE TABLE `m``x` (\n  `a` int\n);\nINSERT INTO `m``x` VALUES\n(1),\n(2);\n")
    whole = mysql.DumpStatsTap()
    whole(dump)
    stats = {t.name: t.rows for t in whole.stats()}
    assert stats == {"t": 4, "e": 0, "m`x": 2}
    for size in (1, 2, 3, 7):
        tap = mysql.DumpStatsTap()
        for i in range(0, len(dump), size):
            tap(dump[i:i + size])
        assert tap.stats() == whole.stats()


def test_stats_tap_reads_mariadb_row_lines_with_semicolons_in_values_in_any_block_size() -> None:
    values = ["a;b", ");", "x);y", "(;)", ";;;", "plain", ")", ";", "\\n;"]
    rows = [f"({i},'{values[i % len(values)]}')".encode() for i in range(60)]
    dump = b"CREATE TABLE `t` (\n  `a` text\n);\n"
    for start in range(0, len(rows), 25):
        dump += b"INSERT INTO `t` VALUES\n" + b",\n".join(rows[start:start + 25]) + b";\n"
    dump += b"UNLOCK TABLES;\nDELIMITER ;;\nINSERT INTO `t` VALUES\n(9);\nDELIMITER ;\n"
    expected = [TableStats(schema="", name="t", rows=len(rows),
                           checksum="sql-b3:" + blake3.blake3(b"".join(r + b",\n" for r in rows)).hexdigest())]
    for size in (1, 2, 3, 5, 64, len(dump)):
        tap = mysql.DumpStatsTap()
        for i in range(0, len(dump), size):
            tap(dump[i:i + size])
        assert tap.stats() == expected, size


def test_views_on_dropped_tables_fail_and_invoker_views_with_a_gone_definer_dump(
        case: MariaDBCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    gone = f"vft_gone_{uuid.uuid4().hex[:6]}"
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"CREATE USER '{gone}'@'%'")
    case.execute(source, f"CREATE DEFINER='{gone}'@'%' SQL SECURITY INVOKER VIEW fine AS SELECT id FROM customers")
    with my_admin() as c, c.cursor() as cur:
        cur.execute(f"DROP USER '{gone}'@'%'")
    sid = new_object_id()
    backup_database(case.engine(source), repo_at(repo_path), snapshot_id=sid)  # an INVOKER view dumps portably
    target = case.new_target(tmp_path)
    restore_snapshot(repo_at(repo_path), sid, case.engine(target))
    assert case.engine(target).table_stats() == case.engine(source).table_stats()

    case.execute(source, "CREATE TABLE doomed (a int)", "CREATE VIEW on_doomed AS SELECT a FROM doomed",
                 "DROP TABLE doomed")
    with pytest.raises(InputError, match="`on_doomed`.*no longer exists"):
        backup_database(case.engine(source), repo_at(repo_path), snapshot_id=new_object_id())
