"""MySQL/MariaDB table subsets: backups that keep chosen tables' rows, restores of chosen tables."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.engines.cases import MariaDBCase
from vaultflow.engines.mysql.restore import RowSectionFilter
from vaultflow.errors import InputError
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, new_object_id
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore


@pytest.fixture
def case(mariadb_available: None) -> Iterator[MariaDBCase]:
    c = MariaDBCase()
    yield c
    c.cleanup()


def repo_at(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


def test_table_subsets_keep_every_schema_and_the_chosen_rows(case: MariaDBCase, repo_path: Path,
                                                              tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    whole = {t.name: t for t in case.engine(source).table_stats()}
    only = backup_database(case.engine(source), repo, BackupRequest(include_tables=["orders", "cust*"]),
                           snapshot_id=new_object_id())
    assert {t.name for t in only.tables if t.rows} == {"orders", "customers"}
    db = source.rsplit("/", 1)[1]
    without = backup_database(case.engine(source), repo, BackupRequest(exclude_tables=[f"{db}.ledger_*", "nokey"]),
                              snapshot_id=new_object_id())
    assert {t.name for t in without.tables if t.rows} == {n for n, t in whole.items() if t.rows} - {
        "ledger_a", "ledger_b", "nokey"}
    with pytest.raises(InputError, match="matches the include/exclude patterns"):
        backup_database(case.engine(source), repo, BackupRequest(include_tables=["nope*"]), snapshot_id=new_object_id())
    case.execute(source, "CREATE TABLE Orders (id int)", "INSERT INTO Orders VALUES (1)")
    with pytest.raises(InputError, match="Orders .*differ only in case"):  # the tool would drop both
        backup_database(case.engine(source), repo, BackupRequest(include_tables=["Orders"]),
                        snapshot_id=new_object_id())
    case.execute(source, "DROP TABLE Orders", "CREATE TABLE history (id int) WITH SYSTEM VERSIONING",
                 "INSERT INTO history VALUES (1)")
    versioned = backup_database(case.engine(source), repo, BackupRequest(exclude_tables=["history"]),
                                snapshot_id=new_object_id())
    assert {t.name: t.rows for t in versioned.tables}.get("history", 0) == 0
    case.execute(source, "DROP TABLE history")

    target = case.new_target(tmp_path)
    restore_snapshot(repo, only.id, case.engine(target))
    restored = {t.name: t for t in case.engine(target).table_stats()}
    assert restored["orders"] == whole["orders"] and restored["customers"] == whole["customers"]
    assert all(not restored.get(n) or not restored[n].rows for n in ("audit", "nokey", "ledger_a"))
    assert case.schema(target) == case.schema(source)  # every table, view and trigger, rows or not


def test_restore_chosen_tables_only(case: MariaDBCase, repo_path: Path, tmp_path: Path) -> None:
    source = case.create_source(tmp_path)
    repo = repo_at(repo_path)
    m = backup_database(case.engine(source), repo, snapshot_id=new_object_id())
    want = {t.name: t for t in m.tables}
    assert want["audit"].rows and want["nokey"].rows

    target = case.new_target(tmp_path)
    restore_snapshot(repo, m.id, case.engine(target), RestoreRequest(tables=["customers", "orders"]))
    got = {t.name: t for t in case.engine(target).table_stats()}
    assert got["orders"] == want["orders"] and got["customers"] == want["customers"]
    assert all(n not in got or not got[n].rows for n in want if n not in ("customers", "orders"))
    assert case.schema(target) == case.schema(source)

    untouched = case.new_target(tmp_path)
    with pytest.raises(InputError, match=r"has no table nope \(it has .*orders"):
        restore_snapshot(repo, m.id, case.engine(untouched), RestoreRequest(tables=["orders", "nope"]))
    assert case.engine(untouched)._schema_info(untouched.rsplit("/", 1)[1]) is None, \
        "a refused restore created its target"


TRIGGER = (b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER t BEFORE INSERT ON a FOR EACH ROW BEGIN\n"
           b"/* old code:\nLOCK TABLES `gone` WRITE;\nUNLOCK TABLES;\n*/ SET NEW.n = 1;\nEND */;;\nDELIMITER ;\n")


def _dump(tables: list[tuple[str, list[str]]]) -> bytes:
    """A dump in mariadb-dump's layout, with values that look like its markers."""
    out = [b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n"]
    for name, rows in tables:
        q = name.replace("`", "``").encode()
        out.append(b"DROP TABLE IF EXISTS `" + q + b"`;\nCREATE TABLE `" + q + b"` (id int);\n")
        out.append(b"LOCK TABLES `" + q + b"` WRITE;\n/*!40000 ALTER TABLE `" + q + b"` DISABLE KEYS */;\n")
        if rows:
            out.append(b"INSERT INTO `" + q + b"` VALUES\n" + b",\n".join(r.encode() for r in rows) + b";\n")
        out.append(b"/*!40000 ALTER TABLE `" + q + b"` ENABLE KEYS */;\nUNLOCK TABLES;\n")
        out.append(TRIGGER)  # bodies are written verbatim: their lines may look like anything
    out.append(b"LOCK TABLES `kept` WRITE ;\n-- Dump completed")  # no newline at the end
    return b"".join(out)


def _reference(dump: bytes, keep: set[str]) -> bytes:
    """The same filter, line by line."""
    out, skipping, body = [], False, False
    for line in dump.splitlines(keepends=True):
        m = re.fullmatch(rb"LOCK TABLES `((?:[^`]|``)+)` WRITE;\n", line)
        if body:
            body = line != b"DELIMITER ;\n"
            out.append(line)
        elif not skipping and m and m.group(1).replace(b"``", b"`").decode() not in keep:
            skipping = True
        elif skipping and line == b"UNLOCK TABLES;\n":
            skipping = False
        elif not skipping:
            body = line == b"DELIMITER ;;\n"
            out.append(line)
    return b"".join(out)


def test_row_section_filter_in_any_block_size() -> None:
    tricky = "(1,'x\\nLOCK TABLES `gone` WRITE;\\nUNLOCK TABLES;')"  # escaped newlines, as the tools write
    long_row = "(2,'" + "y" * 5000 + "')"
    dump = _dump([("kept", [tricky, long_row]), ("gone", [tricky, long_row, "(3,'z')"]), ("we`ird", ["(4,'w')"]),
                  ("empty", []), ("kept2", ["(5,'LOCK TABLES `x` WRITE;')"])])
    keep = {"kept", "we`ird", "kept2"}
    expected = _reference(dump, keep)
    assert b"`gone` VALUES" not in expected and b"`we``ird` VALUES" in expected and b"(5," in expected
    assert expected.count(b"CREATE TABLE") == 5 and expected.count(TRIGGER) == 5
    rng = random.Random(7)
    for size in [1, 2, 3, 13, 14, 15, 16, 100, 1023, 1024, 1025, 4096, len(dump)]:
        for jitter in (False, True):
            out = io.BytesIO()
            f = RowSectionFilter(out, sorted(keep))
            pos = 0
            while pos < len(dump):
                step = rng.randint(1, size) if jitter else size
                f.write(dump[pos:pos + step])
                pos += step
            f.flush()
            assert out.getvalue() == expected, (size, jitter)
