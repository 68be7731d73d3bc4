"""Repository creation, recorded as the first entry of the new repository's audit trail."""

from __future__ import annotations

from vaultflow.audit import current_actor, record
from vaultflow.repository.repository import ObjectLockSettings, Repository
from vaultflow.storage import ObjectStore


def init_repository(store: ObjectStore, passphrase: str, *, object_lock: ObjectLockSettings | None = None
                    ) -> Repository:
    """Create a new repository at `store` (refused where one exists) and record "init" in it.
    With `object_lock` the store must support it (S3 with Object Lock and versioning), else
    nothing is written. A refused init leaves no record: there is no repository of ours to write it to."""
    created = Repository.init(store, passphrase, object_lock=object_lock)
    detail = f"at {store.describe()}" + (f", {object_lock.describe()}" if object_lock is not None else "")
    record(created, "init", "succeeded", current_actor(), object=created.id, detail=detail)
    return created
