"""Where a native backup is staged: a place SQL Server writes (BACKUP ... TO DISK/URL) and
vaultflow reads, and the reverse for a restore.

`DiskStaging` is a directory both reach; `BlobStaging` an Azure Blob container, reached by
SQL Server through a SAS credential and by vaultflow only through a `StagingStore` (an
object store of the storage interface, built outside the engine: engines import no
storage module). NEVER RUN AGAINST A REAL SERVER: the staging places are real in the
tests (Azurite with a real SAS, a real directory); the server's side is a stand-in.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

from pydantic import SecretStr

from vaultflow.engines.sqlserver.client import SqlServerClient
from vaultflow.errors import InputError, StorageUnwritable, ToolFailed, VaultflowError
from vaultflow.log_redaction import hide_sas_in_logs
from vaultflow.repository.repository import ByteSink

STAGING_PREFIX = "vaultflow-staging"  # the folder of the container SQL Server writes to (BACKUP ... TO URL)
READ_BLOCK = 4 * 1024 * 1024
UPLOAD_BLOCK = 8 * 1024 * 1024  # 50,000 blocks of 8 MiB: a staged .bak of up to 390 GiB
_STAGED_RE = re.compile(r"^vf-[0-9a-f]{16}-[a-z0-9._-]+\.bak$")


class StagedObject(Protocol):
    """One object a `StagingStore` lists (vaultflow.storage's ObjectInfo is one)."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...


class StagingStore(Protocol):
    """What blob staging needs from an object store whose keys are the staging names
    (`vaultflow.storage.ObjectStore` has all of it, retried when wrapped in RetryingStore).

    - `open_read`: the object as a stream, read in ranges; KeyError when it is missing.
    - `put_stream`: what `fill` writes becomes one object, uploaded in blocks as it comes
      (size unknown beforehand), committed whole at the end or not at all.
    - `discard_blocks`: drop uncommitted blocks of that object (a failed BACKUP TO URL's).
    - `delete`: the object; a missing one is not an error.
    - `list`: the objects there are (staging leftovers).
    Errors are VaultflowErrors holding no secret (no SAS).
    """

    def describe(self) -> str: ...

    def open_read(self, key: str, block_size: int = ...) -> BinaryIO: ...

    def put_stream(self, key: str, fill: Callable[[ByteSink], None], *, block_size: int = ...) -> None: ...

    def discard_blocks(self, key: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[StagedObject]: ...


def _is_windows_path(path: str) -> bool:
    return "\\" in path and "/" not in path


def server_join(directory: str, name: str) -> str:
    """`name` in `directory` as the SQL Server host writes paths (Windows or Linux)."""
    if _is_windows_path(directory):
        return directory.rstrip("\\") + "\\" + name
    return posixpath.join(directory, name)


_server_join = server_join  # the name the tests know


def staging_name(database: str) -> str:
    """A new, unique staging object name that says what it holds (lowercase a-z0-9._-)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", database.lower()).strip("-._")[:60] or "db"
    return f"vf-{uuid.uuid4().hex[:16]}-{slug}.bak"


@dataclass(frozen=True)
class DiskStaging:
    """A directory both the SQL Server host and vaultflow reach (a share, a bind mount).

    `server_path` is the directory as SQL Server sees it (BACKUP ... TO DISK writes there,
    as its service account); `local_path` is the same directory as vaultflow sees it.
    """

    server_path: str
    local_path: str

    def describe(self, name: str) -> str:
        return f"staging file {os.path.join(self.local_path, name)}"

    def check(self) -> None:
        if not self.server_path or not self.local_path:
            raise InputError("disk staging for SQL Server needs both server_path and local_path",
                             "set the directory as the SQL Server host sees it and as vaultflow sees it")
        if not os.path.isdir(self.local_path):
            raise InputError(f"the staging directory {self.local_path} does not exist or is not a directory",
                             "create it (shared with the SQL Server host as server_path) or fix local_path")

    def backup(self, client: SqlServerClient, database: str, name: str, compression: bool) -> None:
        client.backup_to_disk(database, server_join(self.server_path, name), compression=compression)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = os.path.join(self.local_path, name)
        try:
            stream = open(path, "rb")  # closed by the with below
        except FileNotFoundError:
            raise ToolFailed(f"SQL Server reported the backup done but {path} does not exist",
                             "check that server_path and local_path name the same directory") from None
        with stream:
            yield stream

    def write(self, name: str, fill: Callable[[ByteSink], None]) -> None:
        path = os.path.join(self.local_path, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)  # the server's account must read it
        except OSError as exc:
            raise StorageUnwritable(f"cannot create {path}: {exc.strerror}",
                                    "check that vaultflow may write the staging directory (local_path)") from None
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())

    def restore_source(self, client: SqlServerClient, name: str) -> dict[str, Any]:
        return {"disk": server_join(self.server_path, name)}

    def remove(self, name: str) -> None:
        Path(self.local_path, name).unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Staging files vaultflow made and did not delete (each a copy of a database)."""
        return sorted(p.name for p in Path(self.local_path).iterdir() if _STAGED_RE.match(p.name))


def check_container_url(container_url: str) -> None:
    """The container URL SQL Server reaches: https://ACCOUNT.blob.core.windows.net/CONTAINER."""
    url = container_url.rstrip("/")
    if not url.startswith("https://") or "?" in url or url.count("/") != 3:
        raise InputError("the staging container URL must be https://ACCOUNT.blob.core.windows.net/CONTAINER",
                         "give the SAS separately (staging_sas), not in the URL")


@dataclass(frozen=True)
class BlobStaging:
    """An Azure Blob container both SQL Server (BACKUP/RESTORE ... URL) and vaultflow reach.

    `container_url` is https://ACCOUNT.blob.core.windows.net/CONTAINER as SQL Server reaches
    it; `sas` a SAS for that container (read, write, create, list, delete) that goes only
    into the server's CREDENTIAL (and into `store`, built by the caller). `store` holds the
    objects under `STAGING_PREFIX/` of the same container as vaultflow reaches it (perhaps
    through another URL: a private endpoint, an emulator), keyed by staging name; the
    SqlServer block builds it with `vaultflow.storage.azure.container_store`.
    """

    container_url: str
    sas: SecretStr
    store: StagingStore = field(repr=False, compare=False)

    def describe(self, name: str) -> str:
        return f"staging blob {self.container_url.rstrip('/')}/{STAGING_PREFIX}/{name}"

    def check(self) -> None:
        hide_sas_in_logs()
        check_container_url(self.container_url)
        if not self.sas.get_secret_value().strip("?"):
            raise InputError("the staging SAS is empty", "generate a container SAS with read, write, create, "
                             "list and delete permissions")

    def backup(self, client: SqlServerClient, database: str, name: str, compression: bool) -> None:
        client.backup_to_url(database, self.container_url, self.sas, [f"{STAGING_PREFIX}/{name}"],
                             compression=compression)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        try:
            stream = self.store.open_read(name, READ_BLOCK)
        except KeyError:
            raise ToolFailed(f"SQL Server reported the backup done but {self.describe(name)} does not exist",
                             "check that the staging container URLs of SQL Server and vaultflow name the same "
                             "container") from None
        with stream:
            yield stream

    def write(self, name: str, fill: Callable[[ByteSink], None]) -> None:
        """The blob is committed whole when `fill` returns; its blocks are discarded if not."""
        self.store.put_stream(name, fill, block_size=UPLOAD_BLOCK)

    def restore_source(self, client: SqlServerClient, name: str) -> dict[str, Any]:
        client.url_credential(self.container_url, self.sas)
        return {"urls": [f"{self.container_url.rstrip('/')}/{STAGING_PREFIX}/{name}"]}

    def remove(self, name: str) -> None:
        """Delete the blob and any uncommitted blocks of it (a BACKUP or an upload that failed
        half-way leaves blocks Azure otherwise keeps for up to a week; see the store's
        `discard_blocks`)."""
        try:
            self.store.discard_blocks(name)
        except VaultflowError:
            pass  # e.g. a lease a failed BACKUP left; the delete below reports what matters
        self.store.delete(name)

    def leftovers(self) -> list[str]:
        """Committed staging blobs vaultflow made and did not delete (each a copy of a database)."""
        return sorted(o.key for o in self.store.list() if _STAGED_RE.match(o.key))


Staging = DiskStaging | BlobStaging
