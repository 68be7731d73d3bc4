"""PostgreSQL failure modes: each one raises the right vaultflow error, in one line, without secrets.

Password tests run against a private PostgreSQL cluster with scram-sha-256 authentication
(the shared server on 127.0.0.1:5432 trusts everyone, so it cannot reject a password).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from tests.conftest import PASSPHRASE, PG_HOST, PG_PORT, pg_admin
from vaultflow.engines import engine_from_url
from vaultflow.engines.postgres.config import PostgresConnection
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.process import ToolProcess
from vaultflow.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    InputError,
    IntegrityError,
    TargetNotEmpty,
    ToolVersionMismatch,
    VaultflowError,
    WrongPassphrase,
)
from vaultflow.operations.backup import backup_database
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import (
    ChunkerParams,
    Repository,
    SnapshotManifest,
    StreamManifest,
    new_object_id,
)
from vaultflow.requests import RestoreRequest
from vaultflow.storage import LocalStore

pytestmark = pytest.mark.timeout(300)

WRONG_PASSWORD = "wrong-secret-xyz"


# -- helpers -----------------------------------------------------------------------------


def assert_clean_error(exc: BaseException, *, names: Sequence[str], secrets: Sequence[str] = ()) -> None:
    """One line, names every object in `names`, and no secret in str() or repr()."""
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} has an empty message"
    assert "\n" not in text and "\r" not in text, f"message is not one line: {text!r}"
    for name in names:
        assert name in text, f"message does not name {name!r}: {text!r}"
    for secret in secrets:
        assert secret not in text, f"secret leaked into str(): {text!r}"
        assert secret not in repr(exc), f"secret leaked into repr(): {exc!r}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_engine(database: str, **kwargs: Any) -> PostgresEngine:
    return PostgresEngine(PostgresConnection(host=PG_HOST, port=PG_PORT, user="postgres",
                                             database=database, **kwargs))


def backup(engine: PostgresEngine, repo: Repository) -> SnapshotManifest:
    return backup_database(engine, repo, snapshot_id=new_object_id())


def fill(url_kwargs: dict[str, Any], rows: int = 1000) -> None:
    """Create public.items (id, payload, note) with `rows` rows of md5 text."""
    with psycopg.connect(autocommit=True, **url_kwargs) as c:
        c.execute("CREATE TABLE items (id integer PRIMARY KEY, payload text NOT NULL, note text)")
        c.execute("INSERT INTO items SELECT g, md5(g::text) || md5((g * 7)::text), "
                  "CASE WHEN g %% 3 = 0 THEN NULL ELSE 'n' || g END "
                  "FROM generate_series(1, %s) g", (rows,))


def fill_local(database: str, rows: int = 1000) -> None:
    fill({"host": PG_HOST, "port": PG_PORT, "user": "postgres", "dbname": database}, rows)


def server_databases(like: str) -> set[str]:
    with pg_admin() as c:
        rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)).fetchall()
    return {str(r[0]) for r in rows}


def side_databases(target: str) -> set[str]:
    """The staging and replaced copies a restore into `target` made (their names end in it);
    restores of other tests running meanwhile make their own."""
    assert len(target) <= 24, "longer target names are cut short in their side databases' names"
    return {d for d in server_databases("vf\\_%") if d.endswith(f"_{target}")}


def local_server_version() -> str:
    with pg_admin() as c:
        num = c.info.server_version
    return f"{num // 10000}.{num % 10000}"


def open_repo(path: Path) -> Repository:
    return Repository.open(LocalStore(path), PASSPHRASE)


# -- a private, password-protected PostgreSQL cluster ---------------------------------------


@dataclass(frozen=True)
class PrivateCluster:
    host: str
    port: int
    password: str
    bin_dir: str

    def engine(self, database: str, password: str | None = None) -> PostgresEngine:
        return PostgresEngine(PostgresConnection(
            host=self.host, port=self.port, user="postgres", database=database,
            password=SecretStr(self.password if password is None else password),
            bin_dir=self.bin_dir,
        ))

    def connect_kwargs(self, database: str = "postgres") -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": "postgres", "dbname": database,
                "password": self.password}

    def create_database(self) -> str:
        name = f"vfp_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(autocommit=True, **self.connect_kwargs()) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return name


def postgres_bin_dir() -> str:
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(out.stdout.strip())

    def major(path: str) -> int:
        part = Path(path).parent.name
        return int(part) if part.isdigit() else 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for cand in candidates:
        if all(os.access(os.path.join(cand, t), os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
            return cand
    pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config "
                f"--bindir or /usr/lib/postgresql/*/bin (looked in {candidates}); "
                "install postgresql-15")


def _run(argv: list[str], cwd: str, what: str) -> None:
    try:
        out = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"private PostgreSQL cluster: {what} could not run: {exc}")
    if out.returncode != 0:
        pytest.fail(f"private PostgreSQL cluster: {what} exited {out.returncode}:\n"
                    f"{out.stdout}\n{out.stderr}")


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateCluster]:
    """A throw-away PostgreSQL cluster with scram-sha-256 auth on a free port."""
    bin_dir = postgres_bin_dir()
    try:
        pg_user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("there is no `postgres` system user to run a private PostgreSQL cluster as")
    runuser = shutil.which("runuser")
    if os.geteuid() == 0 and not runuser:
        pytest.fail("running as root but `runuser` is missing: cannot run initdb as postgres")

    def as_postgres(argv: list[str]) -> list[str]:
        return [runuser, "-u", "postgres", "--", *argv] if os.geteuid() == 0 and runuser else argv

    password = f"vf-secret-{uuid.uuid4().hex}"
    base = tempfile.mkdtemp(prefix="vfpg-", dir="/tmp")  # short: the socket path has a length limit
    data = os.path.join(base, "data")
    log = os.path.join(base, "server.log")
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    started = False
    try:
        pwfile = os.path.join(base, "pwfile")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chmod(pwfile, stat.S_IRUSR | stat.S_IWUSR)
        if os.geteuid() == 0:
            os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
            os.chown(pwfile, pg_user.pw_uid, pg_user.pw_gid)
        _run(as_postgres([os.path.join(bin_dir, "initdb"), "-D", data, "--auth=scram-sha-256",
                          f"--pwfile={pwfile}", "-U", "postgres", "--encoding=UTF8",
                          "--locale=C", "--no-sync"]), base, "initdb")
        os.unlink(pwfile)
        port = free_port()
        # -l: the server must not inherit our pipes, or capture_output waits for it forever.
        started = True
        _run(as_postgres([pg_ctl, "-D", data, "-l", log, "-t", "60", "-w",
                          "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"]),
             base, "pg_ctl start")
        cluster = PrivateCluster(host="127.0.0.1", port=port, password=password, bin_dir=bin_dir)
        try:
            with psycopg.connect(connect_timeout=10, **cluster.connect_kwargs()) as c:
                c.execute("SELECT 1")
        except psycopg.Error as exc:
            log_text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
            pytest.fail(f"private PostgreSQL cluster on port {port} started but refused the "
                        f"right password: {exc}\n{log_text[-2000:]}")
        yield cluster
    finally:
        if started:
            subprocess.run(as_postgres([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]),
                           cwd=base, check=False, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def no_ambient_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make sure a password can reach libpq and the tools only through vaultflow."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


@pytest.fixture
def tool_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Record (argv, extra env) of every ToolProcess that vaultflow starts."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    original = ToolProcess.__init__

    def recording_init(self: ToolProcess, argv: Sequence[str], **kwargs: Any) -> None:
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        original(self, argv, **kwargs)

    monkeypatch.setattr(ToolProcess, "__init__", recording_init)
    return calls


# -- credentials -----------------------------------------------------------------------------


def test_wrong_password_is_authentication_failed_and_writes_no_snapshot(
    private_cluster: PrivateCluster, repo_path: Path, no_ambient_password: None,
) -> None:
    engine = private_cluster.engine("postgres", password=WRONG_PASSWORD)
    with pytest.raises(AuthenticationFailed) as info:
        backup(engine, open_repo(repo_path))
    exc = info.value
    assert exc.transient is False
    assert_clean_error(exc, names=[f"127.0.0.1:{private_cluster.port}"],
                       secrets=[WRONG_PASSWORD, private_cluster.password])
    assert open_repo(repo_path).snapshot_ids() == []


def test_right_password_reaches_tools_by_environment_only(
    private_cluster: PrivateCluster, repo_path: Path, no_ambient_password: None,
    tool_calls: list[tuple[list[str], dict[str, str]]],
) -> None:
    source = private_cluster.create_database()
    fill(private_cluster.connect_kwargs(source), rows=2000)
    engine = private_cluster.engine(source)
    repo = open_repo(repo_path)

    manifest = backup(engine, repo)
    assert repo.snapshot_ids() == [manifest.id]
    assert private_cluster.password not in manifest.model_dump_json()

    target = private_cluster.engine(f"vfp_{uuid.uuid4().hex[:10]}")
    restore_snapshot(repo, manifest.id, target)
    assert target.table_stats() == engine.table_stats() == manifest.tables
    assert [t.rows for t in manifest.tables] == [2000]

    tools = {Path(argv[0]).name for argv, _ in tool_calls}
    assert tools == {"pg_dump", "psql", "pg_restore"}
    for argv, env in tool_calls:
        assert not any(private_cluster.password in arg for arg in argv), argv
        assert env.get("PGPASSWORD") == private_cluster.password


# -- reachability and names --------------------------------------------------------------------


def test_nothing_listening_is_transient_connection_failed(repo_path: Path) -> None:
    port = free_port()
    engine = PostgresEngine(PostgresConnection(host="127.0.0.1", port=port, database="postgres",
                                               password=SecretStr(WRONG_PASSWORD), connect_timeout=5))
    with pytest.raises(ConnectionFailed) as info:
        backup(engine, open_repo(repo_path))
    assert info.value.transient is True
    assert_clean_error(info.value, names=[f"127.0.0.1:{port}"], secrets=[WRONG_PASSWORD])
    assert open_repo(repo_path).snapshot_ids() == []


def test_missing_database_is_database_not_found(
    pg_database: Callable[..., str], repo_path: Path,
) -> None:
    name = pg_database(create=False)
    with pytest.raises(DatabaseNotFound) as info:
        backup(local_engine(name), open_repo(repo_path))
    exc = info.value
    assert exc.transient is False and exc.exit_code == 2
    assert_clean_error(exc, names=[name, f"{PG_HOST}:{PG_PORT}"])
    assert open_repo(repo_path).snapshot_ids() == []


def test_pg_dump_older_than_server_is_tool_version_mismatch(
    pg_database: Callable[..., str], repo_path: Path, tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "old-bin"
    bin_dir.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        script = bin_dir / tool
        script.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = "--version" ]; then\n'
            f'  echo "{tool} (PostgreSQL) 9.6.24"\n'
            "  exit 0\n"
            "fi\n"
            "exit 1\n"
        )
        script.chmod(0o755)
    name = pg_database()
    engine = local_engine(name, bin_dir=str(bin_dir))
    server = local_server_version()

    with pytest.raises(ToolVersionMismatch) as info:
        engine.versions()
    assert_clean_error(info.value, names=["pg_dump", "9.6", server, f"{PG_HOST}:{PG_PORT}"])

    with pytest.raises(ToolVersionMismatch) as info:
        backup(engine, open_repo(repo_path))
    assert info.value.transient is False
    assert_clean_error(info.value, names=["pg_dump", "9.6", server, f"{PG_HOST}:{PG_PORT}"])
    assert open_repo(repo_path).snapshot_ids() == []


@pytest.mark.parametrize("url", [
    "postgresql://u:hunter2@127.0.0.1/db",
    "postgres://u:hunter2@127.0.0.1:5433/db?sslmode=require",
    "postgresql://u:hunter2@127.0.0.1:notaport/db",
    "postgresql://:hunter2@127.0.0.1/db",
    "sqlite://u:hunter2@host/x.db",
    "postgresql://u@127.0.0.1/db?password=hunter2",
])
def test_password_in_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(InputError) as info:
        engine_from_url(url)
    assert info.value.exit_code == 2
    # A SQLite URL has no password slot: any clear refusal is fine, as long as it is silent.
    names = [] if url.startswith("sqlite:") else ["password"]
    assert_clean_error(info.value, names=names, secrets=["hunter2"])


# -- restore targets ---------------------------------------------------------------------------


def test_restore_into_non_empty_target_needs_replace(
    pg_database: Callable[..., str], repo_path: Path,
) -> None:
    source = pg_database()
    fill_local(source, rows=3000)
    repo = open_repo(repo_path)
    manifest = backup(local_engine(source), repo)

    target_name = pg_database()
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=target_name,
                         autocommit=True) as c:
        c.execute("CREATE TABLE keep_me (k text)")
        c.execute("INSERT INTO keep_me VALUES ('precious'), ('data')")
    target = local_engine(target_name)
    before = target.table_stats()
    assert side_databases(target_name) == set()

    with pytest.raises(TargetNotEmpty) as info:
        restore_snapshot(repo, manifest.id, target)
    assert info.value.exit_code == 2
    assert_clean_error(info.value, names=[target_name, f"{PG_HOST}:{PG_PORT}"])
    assert target.table_stats() == before
    assert side_databases(target_name) == set()

    restore_snapshot(repo, manifest.id, target, RestoreRequest(replace=True))
    after = target.table_stats()
    assert after == manifest.tables
    assert [t.name for t in after] == ["items"] and after[0].rows == 3000
    assert side_databases(target_name) == set()


# -- damaged repositories ----------------------------------------------------------------------


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def small_chunk_snapshot(
    pg_database: Callable[..., str], tmp_path: Path,
) -> tuple[Repository, Path, SnapshotManifest]:
    """A ~5 MB dump in a repository with small chunks, so it spans many chunk files."""
    path = tmp_path / "small-chunks"
    repo = Repository.init(LocalStore(path), PASSPHRASE, chunker=ChunkerParams(
        min_size=64 * 1024, avg_size=256 * 1024, max_size=1024 * 1024))
    source = pg_database()
    fill_local(source, rows=50_000)
    manifest = backup(local_engine(source), repo)
    assert len(biggest(manifest).chunks) >= 5, "the dump should span several chunks"
    return repo, path, manifest


@pytest.mark.parametrize("damage", ["flip", "delete", "swap"])
def test_damaged_chunk_fails_restore_and_leaves_no_database(
    small_chunk_snapshot: tuple[Repository, Path, SnapshotManifest],
    pg_database: Callable[..., str], damage: str,
) -> None:
    repo, path, manifest = small_chunk_snapshot
    chunks = biggest(manifest).chunks
    victim = chunks[len(chunks) // 2]  # mid-stream: pg_restore is already loading data
    chunk_file = path / "chains" / manifest.chain / "chunks" / victim.id[:2] / victim.id
    assert chunk_file.is_file()
    if damage == "flip":
        flip_byte(chunk_file)
    elif damage == "delete":
        chunk_file.unlink()
    else:
        other = next(c for c in chunks if c.id != victim.id)
        shutil.copyfile(path / "chains" / manifest.chain / "chunks" / other.id[:2] / other.id,
                        chunk_file)

    target_name = pg_database(create=False)
    with pytest.raises(IntegrityError) as info:
        restore_snapshot(repo, manifest.id, local_engine(target_name))
    assert_clean_error(info.value, names=[victim.id[:12], manifest.id[:8]], secrets=[PASSPHRASE])
    assert server_databases(target_name) == set()
    assert side_databases(target_name) == set()


def test_damaged_chunk_leaves_replaced_target_untouched(
    small_chunk_snapshot: tuple[Repository, Path, SnapshotManifest],
    pg_database: Callable[..., str],
) -> None:
    repo, path, manifest = small_chunk_snapshot
    victim = biggest(manifest).chunks[-2]
    flip_byte(path / "chains" / manifest.chain / "chunks" / victim.id[:2] / victim.id)

    target_name = pg_database()
    fill_local(target_name, rows=10)
    target = local_engine(target_name)
    before = target.table_stats()
    assert side_databases(target_name) == set()
    with pytest.raises(IntegrityError) as info:
        restore_snapshot(repo, manifest.id, target, RestoreRequest(replace=True))
    assert_clean_error(info.value, names=[victim.id[:12]])
    assert target.table_stats() == before
    assert side_databases(target_name) == set()


def test_damaged_manifest_fails_restore(
    small_chunk_snapshot: tuple[Repository, Path, SnapshotManifest],
    pg_database: Callable[..., str],
) -> None:
    repo, path, manifest = small_chunk_snapshot
    flip_byte(path / "snapshots" / manifest.id)

    target_name = pg_database(create=False)
    with pytest.raises(IntegrityError) as info:
        restore_snapshot(repo, manifest.id, local_engine(target_name))
    assert_clean_error(info.value, names=[manifest.id[:8]], secrets=[PASSPHRASE])
    assert server_databases(target_name) == set()
    assert side_databases(target_name) == set()


def test_wrong_repository_passphrase(repo_path: Path) -> None:
    with pytest.raises(WrongPassphrase) as info:
        Repository.open(LocalStore(repo_path), "nope")
    exc = info.value
    assert isinstance(exc, VaultflowError) and exc.exit_code == 2
    assert_clean_error(exc, names=[str(repo_path)], secrets=["nope", PASSPHRASE])


def test_malformed_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(InputError) as info:
        engine_from_url("postgresql://u:hunter2@[::1/db")
    assert "malformed" in str(info.value) and "hunter2" not in str(info.value)


def biggest(manifest: SnapshotManifest) -> StreamManifest:
    """The stream with the most data (a table's rows for PostgreSQL)."""
    return max(manifest.streams, key=lambda s: s.size)
