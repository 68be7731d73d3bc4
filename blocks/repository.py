"""The repository block: where backups go and the passphrase that opens them."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class BackupRepository(Block):
    """A vaultflow repository location and its passphrase."""

    _block_type_name = "vaultflow Backup Repository"
    _block_type_slug = "vaultflow-backup-repository"
    _description = "Location (local path) and passphrase of a vaultflow repository."

    location: str = Field(description="Local path of the repository (object storage arrives later).")
    passphrase: SecretStr = Field(description="Opens the repository's keys; losing it loses the backups.")
    catalog_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default ~/.vaultflow/catalog.db."
    )
