"""The archive policy: which rows of which table move to the repository, and when archives go."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import BaseModel, Field


class ArchiveRule(BaseModel):
    """One table's archive policy; a flow parameter (a form in the UI) or saved as an ArchivePolicy block."""

    source: str = Field(description="Engine block name, or postgresql://, mysql://, mariadb:// or sqlite:/// URL")
    table: str = Field(description="Table to archive (schema.table for PostgreSQL)")
    age_column: str = Field(description="Date/timestamp column that says how old a row is")
    archive_after_days: int = Field(default=90, ge=0, description="Rows older than this many days are archived")
    older_than: str | None = Field(default=None, description="Finer age (36h, 90d, 2w); replaces archive_after_days")
    delete_after_days: int | None = Field(
        default=None, ge=0, description="purge_archives deletes batches older than this; empty keeps them forever")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="Rows per Parquet file and delete")
    where: str | None = Field(default=None, description="Extra SQL condition rows must also meet")
    key_columns: list[str] = Field(
        default_factory=list, description="Unique key to use when the table has no primary key")
    name: str | None = Field(default=None, description="Policy name (archive prefix); default database.table")
    enabled: bool = True


class ArchivePolicy(Block):
    """A saved archive policy (`ArchiveRule` fields), editable in the Prefect UI."""

    _block_type_name = "vaultflow Archive Policy"
    _block_type_slug = "vaultflow-archive-policy"
    _description = "Which table's aged rows vaultflow archives to Parquet, and how long it keeps the archives."

    source: str = Field(description="Engine block name, or postgresql://, mysql://, mariadb:// or sqlite:/// URL")
    table: str = Field(description="Table to archive (schema.table for PostgreSQL)")
    age_column: str = Field(description="Date/timestamp column that says how old a row is")
    archive_after_days: int = Field(default=90, ge=0)
    delete_after_days: int | None = Field(default=None, ge=0, description="Empty keeps archives forever")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    where: str | None = Field(default=None, description="Extra SQL condition rows must also meet")
    key_columns: list[str] = Field(default_factory=list, description="Unique key if there is no primary key")
    enabled: bool = True

    def rule(self) -> ArchiveRule:
        fields = self.model_dump(include=set(ArchiveRule.model_fields) - {"name"})
        return ArchiveRule(**fields, name=self._block_document_name)
