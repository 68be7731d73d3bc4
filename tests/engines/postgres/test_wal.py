"""WAL archiving: `vaultflow-wal push %p` as a private cluster's archive_command (run by the
server, as the postgres OS user, from `make wal-venv`), `vaultflow-wal fetch %f %p`, and
`vaultflow pitr check` against the shared server and the archiving cluster.

The tests that need no server use synthetic segments (tests/engines/postgres/wal_segments.py).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, ROOT
from tests.engines.postgres.conftest import ArchivingCluster, open_repo, switch_and_wait
from tests.engines.postgres.wal_segments import fake_data_directory, segment_bytes, segment_name
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.pitr_check import check_pitr_readiness
from vaultflow.engines.postgres.wal import WalConflict, WalName, fetch_wal, push_wal, read_segment_header
from vaultflow.errors import InputError
from vaultflow.repository import Repository
from vaultflow.repository.passphrase import passphrase_from_environment
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)

SYSID = 7_000_000_000_000_000_123
FETCH_FATAL = 126


# -- the server archives through vaultflow-wal ------------------------------------------------


def test_the_server_archives_segments_under_sysid_and_timeline_that_decrypt_to_pg_wal(
        archiving_cluster: ArchivingCluster) -> None:
    names = switch_and_wait(archiving_cluster)
    sysid = archiving_cluster.sysid()
    repo = open_repo(archiving_cluster)
    keys = {info.key for info in repo.store.list("wal/")}
    for name in names:
        key = f"wal/{sysid}/00000001/{name.lower()}"
        assert key in keys, f"{name} is not archived under {key}: {sorted(keys)}"
        original = (archiving_cluster.data / "pg_wal" / name).read_bytes()
        assert repo.sealer.open(repo.store.get(key), b"wal:" + key.encode(), max_size=1 << 30) == original
        stored = repo.store.stat(key)
        assert stored is not None and stored.size < len(original), "the segment is stored compressed"
        assert original[4096:4096 + 64] not in repo.store.get(key), "the segment is stored encrypted"
    with archiving_cluster.connect() as c:
        assert c.execute("SELECT failed_count FROM pg_stat_archiver").fetchone() == (0,)


def test_same_content_again_succeeds_without_rewriting_and_other_content_fails_naming_the_segment(
        archiving_cluster: ArchivingCluster) -> None:
    name = switch_and_wait(archiving_cluster, switches=1)[0]
    key = f"wal/{archiving_cluster.sysid()}/00000001/{name.lower()}"
    stored = archiving_cluster.repo / key
    before = (stored.stat().st_ino, stored.stat().st_mtime_ns, stored.read_bytes())

    again = archiving_cluster.wal("push", f"pg_wal/{name}")
    assert again.returncode == 0, again.stderr
    assert (stored.stat().st_ino, stored.stat().st_mtime_ns, stored.read_bytes()) == before

    other_dir = archiving_cluster.base / "other" / "pg_wal"
    other_dir.mkdir(parents=True)
    other = other_dir / name
    data = bytearray((archiving_cluster.data / "pg_wal" / name).read_bytes())
    data[100_000] ^= 0xFF
    other.write_bytes(bytes(data))
    for path in (other_dir.parent, other_dir, other):
        archiving_cluster.give_to_postgres(path)
    different = archiving_cluster.wal("push", str(other), "--pgdata", str(archiving_cluster.data))
    assert different.returncode == 1
    lines = different.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "different content" in lines[0], different.stderr
    assert stored.read_bytes() == before[2], "the archived segment was not touched"


def test_fetch_round_trip_and_a_missing_segment_exits_1(archiving_cluster: ArchivingCluster) -> None:
    name = switch_and_wait(archiving_cluster, switches=1)[0]
    target_dir = archiving_cluster.base / "restore" / "pg_wal"
    target_dir.mkdir(parents=True)
    for path in (target_dir.parent, target_dir):
        archiving_cluster.give_to_postgres(path)
    target = target_dir / "RECOVERYXLOG"
    fetched = archiving_cluster.wal("fetch", name, str(target), "--pgdata", str(archiving_cluster.data))
    assert fetched.returncode == 0, fetched.stderr
    assert target.read_bytes() == (archiving_cluster.data / "pg_wal" / name).read_bytes()
    assert [p.name for p in target_dir.iterdir()] == ["RECOVERYXLOG"], "no temp file is left"

    missing = archiving_cluster.wal("fetch", "0000000100000000000000FE", str(target_dir / "X"),
                                    "--pgdata", str(archiving_cluster.data))
    assert missing.returncode == 1, missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "0000000100000000000000FE" in missing.stderr
    assert not (target_dir / "X").exists()


def test_wrong_passphrase_is_fatal_for_fetch_in_one_line_without_the_passphrase(
        archiving_cluster: ArchivingCluster) -> None:
    name = switch_and_wait(archiving_cluster, switches=1)[0]
    wrong = "not-the-passphrase-4711"
    env = {"VAULTFLOW_REPO": str(archiving_cluster.repo), "VAULTFLOW_PASSPHRASE": wrong}
    fetched = archiving_cluster.wal("fetch", name, str(archiving_cluster.base / "x"),
                                    "--pgdata", str(archiving_cluster.data), env=env)
    assert fetched.returncode == FETCH_FATAL
    pushed = archiving_cluster.wal("push", f"pg_wal/{name}", env=env)
    assert pushed.returncode == 2
    for result in (fetched, pushed):
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "wrong passphrase" in lines[0], result.stderr
        assert wrong not in result.stderr + result.stdout and PASSPHRASE not in result.stderr


def test_a_passphrase_file_readable_by_others_is_refused(archiving_cluster: ArchivingCluster) -> None:
    name = switch_and_wait(archiving_cluster, switches=1)[0]
    loose = archiving_cluster.base / "loose-passphrase"
    loose.write_text(PASSPHRASE + "\n")
    loose.chmod(0o644)
    archiving_cluster.give_to_postgres(loose)
    result = archiving_cluster.wal("push", f"pg_wal/{name}",
                                   env=archiving_cluster.env(VAULTFLOW_PASSPHRASE_FILE=str(loose)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(loose) in lines[0] and "0644" in lines[0] and "chmod 600" in lines[0]
    assert PASSPHRASE not in result.stderr


def test_pitr_check_names_what_the_shared_server_lacks_and_passes_the_archiving_cluster(
        archiving_cluster: ArchivingCluster) -> None:
    shared = check_pitr_readiness(PostgresEngine(PostgresConnection(host="127.0.0.1", port=5432)))
    by_name = {c.name: c for c in shared.checks}
    assert not shared.ready
    assert by_name["archive_mode"].status == "missing" and by_name["archive_mode"].apply == "restart"
    assert by_name["archive_mode"].fix == ("ALTER SYSTEM SET archive_mode = 'on';",)
    assert by_name["archive_command"].status == "missing"
    assert set(by_name) >= {"wal_level", "max_wal_senders", "role_replication", "full_page_writes",
                            "data_checksums", "archive_timeout", "archiver"}

    switch_and_wait(archiving_cluster, switches=1)
    ready = check_pitr_readiness(archiving_cluster.engine())
    assert ready.ready, [c for c in ready.checks if c.status == "missing"]

    cli = [sys.executable, "-m", "vaultflow.cli.main", "pitr", "check"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = subprocess.run([*cli, "postgresql://postgres@127.0.0.1:5432"], capture_output=True, text=True,
                             env=env, timeout=120, check=False)
    assert missing.returncode == 3, missing.stderr
    assert "MISSING   archive_mode: off" in missing.stdout
    assert "ALTER SYSTEM SET archive_mode = 'on';" in missing.stdout and "restart" in missing.stdout
    ok = subprocess.run([*cli, f"postgresql://postgres@127.0.0.1:{archiving_cluster.port}", "--json"],
                        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"ready": true' in ok.stdout


# -- without a server -------------------------------------------------------------------------


def test_segment_names_and_headers_are_checked(tmp_path: Path) -> None:
    assert WalName.parse("000000020000000A000000FF").key(SYSID) == f"wal/{SYSID}/00000002/000000020000000a000000ff"
    assert WalName.parse("00000003.history").key(SYSID) == f"wal/{SYSID}/history/00000003.history"
    assert WalName.parse("000000010000000000000002.partial").kind == "partial"
    assert WalName.parse("000000010000000000000002.00000028.backup").kind == "backup"
    for bad in ("RECOVERYXLOG", "00000001000000000000000g", "../000000010000000000000001", "1.history"):
        with pytest.raises(InputError):
            WalName.parse(bad)
    name = segment_name(1, 5)
    header = read_segment_header(segment_bytes(SYSID, 1, 5), WalName.parse(name))
    assert header.system_identifier == SYSID and header.segment_size == 1 << 20
    with pytest.raises(InputError, match="not the one its name says"):
        read_segment_header(segment_bytes(SYSID, 1, 6), WalName.parse(name))
    with pytest.raises(InputError, match="its header says"):
        read_segment_header(segment_bytes(SYSID, 1, 5)[:-1], WalName.parse(name))


def test_history_files_and_segments_round_trip_and_another_cluster_is_refused(tmp_path: Path) -> None:
    repo = Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    data = fake_data_directory(tmp_path / "data", SYSID)
    history = data / "pg_wal" / "00000002.history"
    history.write_bytes(b"1\t0/3000060\tno recovery target specified\n")
    assert push_wal(repo, history).key == f"wal/{SYSID}/history/00000002.history"
    segment = data / "pg_wal" / segment_name(2, 7)
    segment.write_bytes(segment_bytes(SYSID, 1, 7))  # the first segment of a timeline keeps the old one's header
    first = push_wal(repo, segment)
    assert first.stored and not push_wal(repo, segment).stored
    segment.write_bytes(segment_bytes(SYSID, 1, 7, fill=b"y"))
    with pytest.raises(WalConflict, match=segment.name):
        push_wal(repo, segment)

    restored = fake_data_directory(tmp_path / "restored", SYSID)
    assert fetch_wal(repo, "00000002.history", restored / "pg_wal" / "RECOVERYHISTORY") == history.stat().st_size
    fetch_wal(repo, segment.name, restored / "pg_wal" / "RECOVERYXLOG")
    assert (restored / "pg_wal" / "RECOVERYXLOG").read_bytes() == segment_bytes(SYSID, 1, 7)

    stranger = data / "pg_wal" / segment_name(2, 8)
    stranger.write_bytes(segment_bytes(SYSID + 1, 2, 8))
    with pytest.raises(InputError, match="belongs to cluster"):
        push_wal(repo, stranger)


def test_passphrase_file_rules(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("a passphrase\n")
    good.chmod(0o600)
    assert passphrase_from_environment({"VAULTFLOW_PASSPHRASE_FILE": str(good)}) == "a passphrase"
    assert passphrase_from_environment({"VAULTFLOW_PASSPHRASE": "x"}) == "x"
    assert passphrase_from_environment({}) is None
    cases = {"0640": (0o640, "a passphrase\n"), "2 lines": (0o600, "one\ntwo\n"), "empty": (0o600, "\n")}
    for label, (mode, text) in cases.items():
        path = tmp_path / label.replace(" ", "-")
        path.write_text(text)
        path.chmod(mode)
        with pytest.raises(InputError) as exc:
            passphrase_from_environment({"VAULTFLOW_PASSPHRASE_FILE": str(path)})
        assert str(path) in exc.value.line() and "passphrase" in exc.value.line(), label
        assert "one" not in exc.value.line().replace("one line", "") and "a passphrase" not in exc.value.line()
    with pytest.raises(InputError, match="set only one"):
        passphrase_from_environment({"VAULTFLOW_PASSPHRASE": "x", "VAULTFLOW_PASSPHRASE_FILE": str(good)})
    assert stat.S_IMODE(good.stat().st_mode) == 0o600


def test_the_wal_command_imports_only_the_core() -> None:
    """archive_command starts a process per segment: it must not pay for Prefect, typer, rich or a driver,
    nor for the pydantic manifest models (R77: about 60 % of its start-up before, bench/README.md)."""
    probe = ("import sys, vaultflow.wal.command; "
             "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'prefect', 'typer', 'rich', 'psycopg', 'blocks', 'flows', 'tasks', 'sqlalchemy', 'pydantic'})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == ""


def test_a_push_and_a_fetch_run_without_the_manifest_models(tmp_path: Path) -> None:
    """R77: not only the import, the whole push and fetch of a segment stay clear of pydantic."""
    sysid = 7_000_000_000_000_000_501
    Repository.init(LocalStore(tmp_path / "repo"), PASSPHRASE)
    data = fake_data_directory(tmp_path / "data", sysid)
    name = segment_name(1, 3)
    (data / "pg_wal" / name).write_bytes(segment_bytes(sysid, 1, 3))
    probe = ("import sys; from vaultflow.wal.command import main; "
             f"codes = [main(['push', 'pg_wal/{name}']), main(['fetch', '{name}', 'pg_wal/RECOVERYXLOG'])]; "
             "print(codes, sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_core'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False,
                         cwd=data, env={**os.environ, "PYTHONPATH": str(ROOT), "VAULTFLOW_REPO": str(tmp_path / "repo"),
                                        "VAULTFLOW_PASSPHRASE": PASSPHRASE})
    assert out.stdout.strip() == "[0, 0] []", out.stdout + out.stderr
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == (data / "pg_wal" / name).read_bytes()
