"""The options of a backup, a restore and a restore drill, each declared once.

The CLI reads its option defaults and help from these fields, the flows take one of these
as their `options` parameter (the Prefect UI renders it as a form), and the tasks hand it
on to the core. What a run acts on (source, target, repository, snapshot, kind) is not an
option: those stay top-level flow parameters, which schedules can override one by one.
None of these options is a secret; a flow run's parameters are stored by the Prefect API.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    """Immutable, and a misspelt option is an error rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_minutes: int = Field(default=360, ge=1, description="Kill the dump or restore after this many minutes "
                                                        "(each one's, when there are several).")
    jobs: int = Field(default=1, ge=1, le=64, description="Tables processed at once (PostgreSQL).")

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60.0


class BackupRequest(_Request):
    """How to back up one database (the `backup` flow; `backup-fleet` for each database)."""

    table_checksums: bool = Field(default=True, description="Record a content checksum per table (costs one extra "
                                                    "read of each table).")
    include_tables: list[str] = Field(default_factory=list, description="Globs (schema.table or table) of the "
                                                                        "tables whose rows are backed up; all if "
                                                                        "empty.")
    exclude_tables: list[str] = Field(default_factory=list, description="Globs of tables whose rows are skipped; "
                                                                        "the schema is always complete.")
    repair: bool = Field(default=False, description="Dump everything and rewrite every chunk, replacing ones verify "
                                            "found missing or damaged in the chain.")
    include_globals: bool = Field(default=False, description="Also store the server's roles/users and grants "
                                                     "(pg_dumpall --globals-only; MySQL SHOW GRANTS).")
    globals_passwords: bool = Field(default=False, description="Keep password hashes in the stored roles/users (off: "
                                                       "they are restored without passwords).")
    skip_unreadable: bool = Field(default=False, description="Files: leave out entries that cannot be read, "
                                                     "listing them in the log and the snapshot, instead of failing.")


class RestoreRequest(_Request):
    """How to restore one snapshot into a database (the `restore` flow)."""

    replace: bool = Field(default=False, description="Swap out a target that already has tables.")
    owner: bool = Field(default=True, description="Restore ownership and grants (off for roles missing on the target "
                                          "server).")
    tables: list[str] = Field(default_factory=list, description="Restore only these tables' rows (schema.name; "
                                                                "name for MySQL); all if empty.")
    include_globals: bool = Field(default=False, description="First create the roles/users stored with the snapshot "
                                                     "that the target server lacks.")
    server_locale: bool = Field(default=False, description="Create the database with the target server's default "
                                                   "encoding and locale instead of the snapshot's.")


class DrillRequest(_Request):
    """How to drill one snapshot: restore into a scratch database, check, drop it."""

    scan_constraints: bool = Field(default=False, description="Also scan for default expectations the restored schema "
                                                      "enforces (NOT NULL, unique indexes).")
    server_locale: bool = Field(default=False, description="Create the scratch database with the server's default "
                                                   "encoding and locale, not the snapshot's.")
