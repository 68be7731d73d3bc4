"""Byte-oriented object stores: the one small interface every backend implements."""

from vaultflow.storage.base import ObjectInfo, ObjectStore, validate_key
from vaultflow.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "validate_key", "open_store"]


def open_store(location: str) -> ObjectStore:
    """Open the store a repository location names (today: a local path or file:// URL)."""
    from vaultflow.errors import InputError

    if location.startswith("file://"):
        return LocalStore(location[len("file://") :])
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise InputError(
            f"repository location {location!r} uses unsupported scheme {scheme!r}",
            "give a local path (s3:// and az:// arrive with the object-storage backends)",
        )
    return LocalStore(location)
