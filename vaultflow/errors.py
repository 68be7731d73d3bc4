"""One error hierarchy for the whole product.

Every error renders as one line: what went wrong, which object, what to do. Whether a
Prefect task retries depends only on `transient` (see `tasks.retry_policy`); whether the
CLI exits 1 or 2 depends only on `exit_code`. Messages never contain secrets.
"""

from __future__ import annotations


class VaultflowError(Exception):
    """Base error: `what` names the failure and the object, `fix` says what to do."""

    transient: bool = False
    exit_code: int = 1

    def __init__(self, what: str, fix: str = "") -> None:
        self.what = what
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.what}; {self.fix}" if self.fix else self.what

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.what, self.fix))


class TransientError(VaultflowError):
    """May succeed if tried again: connection refused, timeouts, throttling."""

    transient = True


class InputError(VaultflowError):
    """The user's input is wrong (bad URL, unknown snapshot, target not empty): exit 2."""

    exit_code = 2


class ConnectionFailed(TransientError):
    """The database server or storage endpoint did not answer."""


class AuthenticationFailed(VaultflowError):
    """Credentials were rejected; retrying does not help."""


class DatabaseNotFound(InputError):
    """The named database does not exist on the server."""


class ToolVersionMismatch(VaultflowError):
    """A client tool (pg_dump, pg_restore) cannot work with this server."""


class ToolFailed(VaultflowError):
    """A dump or restore tool exited non-zero for a reason that is not transient."""


class RepositoryError(VaultflowError):
    """The repository cannot be used as asked."""


class RepositoryNotInitialised(InputError):
    """The location holds no vaultflow repository."""


class WrongPassphrase(InputError):
    """The passphrase does not open this repository's key."""


class StorageNotFound(InputError):
    """The bucket or container a repository location names does not exist."""


class StorageFull(VaultflowError):
    """The storage has no space left."""


class StorageUnwritable(VaultflowError):
    """The storage refuses writes (permissions, read-only)."""


class IntegrityError(VaultflowError):
    """Stored data failed its checksum or authentication."""


class SnapshotNotFound(InputError):
    """No snapshot matches the given id."""


class AmbiguousSnapshot(InputError):
    """More than one snapshot matches the given id prefix."""


class TargetNotEmpty(InputError):
    """A restore target already holds data and --replace was not given."""


class OperationStopped(VaultflowError):
    """The run this operation belongs to was cancelled: it stopped at its next progress
    report, before anything became visible (no manifest was written)."""


class SourceUnreadable(VaultflowError):
    """A file of a backed-up tree cannot be read (permissions, removed or changed mid-read)."""


class BackupSetIncomplete(VaultflowError):
    """A file tree of a backup set failed after other members were written: each written
    snapshot is whole, the set is not (`vaultflow show` says which member is missing)."""


class ObjectLocked(VaultflowError):
    """The store refused to delete an object version that object lock retains until `until`
    (an ISO 8601 UTC timestamp, or "" when the store did not say): an expected state, not damage."""

    def __init__(self, what: str, fix: str = "", until: str = "") -> None:
        self.until = until
        super().__init__(what, fix)

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.what, self.fix, self.until))


class KeyRoleInsufficient(VaultflowError):
    """The repository key opened has a role without the right an operation needs (a backup key
    cannot decrypt stored data, only an admin key may delete or manage keys). Permanent: the
    same key fails the same way again, so flows do not retry it."""
