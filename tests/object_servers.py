"""Real object-storage emulators on loopback for the tests: moto's S3 server and Azurite.

Each server runs as a child process on a free 127.0.0.1 port, is waited for until it
answers, and is killed when the session ends. A missing emulator fails the test that
needs it (never a skip); .ci/run installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_BIN = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} at start: {log.read_text()[-800:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@contextmanager
def _child(argv: list[str], port: int, what: str, env: dict[str, str] | None = None) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="vf-objsrv-") as tmp:
        log = Path(tmp) / "log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            _wait_port(port, proc, what, log)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def new_bucket(self) -> str:
        name = f"vf-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def moto_server(*, auth: bool = False) -> Iterator[S3Server]:
    """moto's S3-compatible server; with `auth`, it checks access keys (and knows none)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail("moto[server] is not installed; run: make .venv/.installed")
    port = free_port()
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {}
    with _child([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                "moto server", env):
        yield S3Server(f"http://127.0.0.1:{port}")


@dataclass(frozen=True)
class AzuriteServer:
    port: int

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.account_url};")

    def sas_connection_string(self, container: str, expiry_hours: float) -> str:
        """A connection string holding a container SAS (read, write, list, delete)."""
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        now = datetime.now(UTC)
        sas = generate_container_sas(
            AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, write=True, list=True, delete=True, create=True),
            start=now - timedelta(hours=2) + timedelta(hours=min(expiry_hours, 0)),
            expiry=now + timedelta(hours=expiry_hours))
        return f"BlobEndpoint={self.account_url};SharedAccessSignature={sas}"

    def new_container(self) -> str:
        from azure.storage.blob import BlobServiceClient

        name = f"vf-{uuid.uuid4().hex[:12]}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name


@contextmanager
def azurite_server() -> Iterator[AzuriteServer]:
    binary = str(AZURITE_BIN) if AZURITE_BIN.exists() else shutil.which("azurite-blob")
    if not binary:
        pytest.fail(f"Azurite is not installed; run: npm install --prefix {AZURITE_BIN.parents[2]} azurite")
    port = free_port()
    with _child([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--loose", "--skipApiVersionCheck",
                 "--inMemoryPersistence", "--disableTelemetry", "--silent"], port, "Azurite"):
        yield AzuriteServer(port)
