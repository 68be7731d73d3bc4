"""PostgreSQL to S3 (moto) and to Azure Blob (Azurite) through the `vaultflow` command, and back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engines.cases import PostgresCase
from tests.object_servers import AzuriteServer, S3Server

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(params=["s3", "azure"])
def remote(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """An empty bucket or container: (location, environment that reaches it)."""
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        return f"s3://{s3.new_bucket()}/pg", s3.env()
    az: AzuriteServer = request.getfixturevalue("azurite")
    return f"az://{az.new_container()}/pg", {"AZURE_STORAGE_CONNECTION_STRING": az.connection_string}


@pytest.fixture
def pg_case(pg_available: None) -> PostgresCase:
    case = PostgresCase()
    yield case  # type: ignore[misc]
    case.cleanup()


def test_postgres_backup_to_object_storage_and_restore(cli: Cli, remote: tuple[str, dict[str, str]],
                                                        pg_case: PostgresCase, tmp_path: Path) -> None:
    location, env = remote
    source = pg_case.create_source(tmp_path)
    pg_case.bulk(source, mib=8)

    not_init = cli("backup", source, "--repo", location, env=env)
    assert not_init.returncode == 2
    assert f"no vaultflow repository at {location}; create one with: vaultflow init --repo {location}" in \
        not_init.stderr

    assert cli("init", "--repo", location, env=env).returncode == 0
    done = cli("backup", source, "--repo", location, "--json", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    snapshot = str(json.loads(done.stdout)["snapshot"])

    target = pg_case.new_target(tmp_path)
    restored = cli("restore", snapshot, target, "--repo", location, env=env, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert pg_case.engine(target).table_stats() == pg_case.engine(source).table_stats()
    assert pg_case.schema(target) == pg_case.schema(source)
    assert pg_case.extra_state(target) == pg_case.extra_state(source)

    listed = cli("snapshots", "--repo", location, "--json", env=env)
    assert listed.returncode == 0 and [r["status"] for r in json.loads(listed.stdout)] == ["Succeeded"]
    secrets = [v for k, v in env.items() if "SECRET" in k or "CONNECTION" in k]
    for proc in (done, restored, listed):
        assert not any(s in proc.stdout + proc.stderr for s in secrets)


def test_export_download_url(cli: Cli, remote: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    import urllib.request
    from datetime import UTC, datetime, timedelta

    from vaultflow.catalog import Catalog
    from vaultflow.sample_data import compare, create

    location, env = remote
    src = create(tmp_path / "src.db", rows=3000)
    assert cli("init", "--repo", location, env=env).returncode == 0
    done = cli("backup", f"sqlite:///{src}", "--repo", location, "--json", env=env)
    assert done.returncode == 0, done.stderr
    snapshot = str(json.loads(done.stdout)["snapshot"])

    proc = cli("export", snapshot, "--url", "--expires", "2h", "--repo", location, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expires_at = datetime.fromisoformat(out["expires_at"])
    assert timedelta(hours=1, minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=2)
    assert out["object"].startswith(f"{location}/exports/") and out["object"].endswith(".db")
    downloaded = tmp_path / "downloaded.db"
    with urllib.request.urlopen(out["url"], timeout=30) as resp:  # no credentials: the link alone
        downloaded.write_bytes(resp.read())
    assert compare(src, downloaded) == []

    (link,) = Catalog().download_links(out["snapshot"])
    assert link.location == out["object"] and link.size == downloaded.stat().st_size
    assert abs(link.expires_at.replace(tzinfo=UTC) - expires_at) < timedelta(seconds=1)
    assert out["url"].split("?", 1)[1] not in repr(link.model_dump())

    plain = cli("export", snapshot, "--url", "--repo", location, env=env)
    assert plain.returncode == 0 and plain.stdout.strip().startswith("http") and "not encrypted" in plain.stderr


def test_export_url_needs_object_storage(cli: Cli, tmp_path: Path) -> None:
    from vaultflow.sample_data import create

    repo = tmp_path / "repo"
    src = create(tmp_path / "src.db", rows=500)
    assert cli("init", "--repo", str(repo)).returncode == 0
    snapshot = str(json.loads(cli("backup", f"sqlite:///{src}", "--repo", str(repo), "--json").stdout)["snapshot"])
    proc = cli("export", snapshot, "--url", "--repo", str(repo))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {repo} cannot hand out download links; use --to FILE, or a repository on S3 or Azure Blob storage")
    both = cli("export", snapshot, "--url", "--to", "x.db", "--repo", str(repo))
    assert both.returncode == 2 and "exactly one of --to FILE and --url" in both.stderr


def test_storage_bad_inputs_are_one_line(cli: Cli, s3_server: S3Server, azurite: AzuriteServer) -> None:
    from tests.object_servers import free_port

    def one_line(proc: subprocess.CompletedProcess[str]) -> str:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, proc.stderr
        assert "testing" not in proc.stderr and "AccountKey" not in proc.stderr
        return lines[0]

    gone = cli("snapshots", "--repo", "s3://no-such-bucket/pg", env=s3_server.env())
    assert gone.returncode == 2 and "S3 bucket 'no-such-bucket' does not exist" in one_line(gone)

    unreachable = cli("snapshots", "--repo", "s3://some-bucket/pg",
                      env={**s3_server.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    line = one_line(unreachable)
    assert unreachable.returncode == 1 and "failed 6 times" in line and "did not answer" in line

    no_container = cli("init", "--repo", "az://no-such-container/pg",
                       env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    assert no_container.returncode == 2 and "Azure container 'no-such-container' does not exist" in \
        one_line(no_container)


def test_a_download_link_keeps_its_signature_out_of_repr() -> None:
    """The signed URL is a bearer credential: a logged or printed DownloadLink must not show it."""
    from datetime import UTC, datetime

    from vaultflow.operations.share import DownloadLink

    url = "https://bucket.s3.example/exports/x.db?X-Amz-Credential=AKIA&X-Amz-Signature=vftsecret0123"
    link = DownloadLink(manifest=None, key="exports/x.db", location="s3://bucket/exports/x.db",  # type: ignore[arg-type]
                        url=url, size=1, expires_at=datetime.now(UTC))
    assert "vftsecret0123" not in repr(link) and link.url == url
