"""Repository creation, recorded as the first entry of the new repository's audit trail."""

from __future__ import annotations

from vaultflow.audit import current_actor, record
from vaultflow.repository.repository import Repository
from vaultflow.storage import ObjectStore


def init_repository(store: ObjectStore, passphrase: str) -> Repository:
    """Create a new repository at `store` (refused where one exists) and record "init" in it.
    A refused init leaves no record: there is no repository of ours to write it to."""
    created = Repository.init(store, passphrase)
    record(created, "init", "succeeded", current_actor(), object=created.id, detail=f"at {store.describe()}")
    return created
