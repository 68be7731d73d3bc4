"""`vaultflow pitr check`: is a PostgreSQL server ready for archiving-based point-in-time recovery?

Reads the settings (from `pg_settings`, which also says whether a change needs a restart or a
reload), the connecting role's REPLICATION attribute and `pg_stat_archiver`, and returns one
check per item: `ok`, `missing` (PITR does not work until it is fixed) or `advisable`. For
every check that is not ok it gives the exact statements to run. Reads only; changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaultflow.engines.pitr_readiness import Apply, PitrCheck, PitrReadiness

if TYPE_CHECKING:
    from vaultflow.engines.postgres.engine import PostgresEngine

SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_library", "archive_timeout",
            "max_wal_senders", "full_page_writes", "data_checksums")
ARCHIVE_COMMAND_EXAMPLE = ("VAULTFLOW_REPO=<repository> VAULTFLOW_PASSPHRASE_FILE=<0600 file> "
                           "<checkout>/.wal-venv/bin/vaultflow-wal push %p")
WAL_PUSH_MARKERS = ("vaultflow-wal push", "vaultflow.wal push", "vaultflow wal-push")
RECOMMENDED_ARCHIVE_TIMEOUT_S = 60
_INLINE_PASSPHRASE = re.compile(r"(VAULTFLOW_PASSPHRASE=)('[^']*'|\"[^\"]*\"|\S+)")


@dataclass(frozen=True)
class _Setting:
    value: str | None  # None: the role may not read it
    context: str
    pending_restart: bool

    @property
    def apply(self) -> Apply:
        return "restart" if self.context == "postmaster" else "reload" if self.context == "sighup" else ""

    def shown(self) -> str:
        if self.value is None:
            return "(not readable by this role)"
        return (self.value or "(empty)") + (" (a change waits for a restart)" if self.pending_restart else "")


def _alter(name: str, value: str) -> str:
    return f"ALTER SYSTEM SET {name} = '{value}';"


def check_pitr_readiness(engine: PostgresEngine) -> PitrReadiness:
    """Read the server's PITR settings, role and archiver state (one connection, read only)."""
    from vaultflow.engines.postgres.basebackup import settings_session

    with settings_session(engine) as c:
        rows = c.execute("SELECT name, setting, context, pending_restart FROM pg_settings "
                         "WHERE name = ANY(%s)", (list(SETTINGS),)).fetchall()
        settings = {str(r[0]): _Setting(str(r[1]), str(r[2]), bool(r[3])) for r in rows}
        role = c.execute("SELECT current_user, rolreplication, rolsuper FROM pg_roles "
                         "WHERE rolname = current_user").fetchone()
        archiver = c.execute("SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
                             "last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
        in_recovery = bool(c.execute("SELECT pg_is_in_recovery()").fetchone()[0])  # type: ignore[index]
        version = str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    unreadable = _Setting(None, "", False)

    def get(name: str) -> _Setting:
        return settings.get(name, unreadable)

    checks = [
        _wal_level(get("wal_level")),
        _archive_mode(get("archive_mode"), in_recovery),
        _archive_command(get("archive_command"), settings.get("archive_library"), role),
        _max_wal_senders(get("max_wal_senders")),
        _replication_role(role),
        _full_page_writes(get("full_page_writes")),
        _data_checksums(get("data_checksums")),
        _archive_timeout(get("archive_timeout")),
        _archiver(archiver),
    ]
    return PitrReadiness(engine.server_label(), version, tuple(checks))


def _unreadable(name: str, setting: _Setting, role: str) -> PitrCheck:
    return PitrCheck(name, "missing", setting.shown(), "readable", (f'GRANT pg_read_all_settings TO "{role}";',))


def _wal_level(s: _Setting) -> PitrCheck:
    want = "replica or logical"
    if s.value in ("replica", "logical"):
        return PitrCheck("wal_level", "ok", s.shown(), want)
    return PitrCheck("wal_level", "missing", s.shown(), want, (_alter("wal_level", "replica"),), "restart")


def _archive_mode(s: _Setting, in_recovery: bool) -> PitrCheck:
    if in_recovery:
        want = "always (this server is a standby)"
        ok = s.value == "always"
        return PitrCheck("archive_mode", "ok" if ok else "missing", s.shown(), want,
                         () if ok else (_alter("archive_mode", "always"),), "restart")
    ok = s.value in ("on", "always")
    return PitrCheck("archive_mode", "ok" if ok else "missing", s.shown(), "on",
                     () if ok else (_alter("archive_mode", "on"),), "restart")


def _archive_command(s: _Setting, library: _Setting | None, role: Any) -> PitrCheck:
    want = "vaultflow-wal push %p"
    if s.value is None:
        return _unreadable("archive_command", s, str(role[0]) if role else "ROLE")
    fix = (_alter("archive_command", ARCHIVE_COMMAND_EXAMPLE),)
    if library is not None and library.value:
        return PitrCheck("archive_command", "missing", f"archive_library {library.value} overrides it", want,
                         ("ALTER SYSTEM RESET archive_library;", *fix), "reload")
    shown = _INLINE_PASSPHRASE.sub(r"\1(hidden)", s.shown())
    if any(m in s.value for m in WAL_PUSH_MARKERS) and "%p" in s.value:
        if shown != s.shown():
            return PitrCheck("archive_command", "advisable", shown, "the passphrase in a 0600 file, not in the "
                             "command", (_alter("archive_command", ARCHIVE_COMMAND_EXAMPLE),), "reload")
        return PitrCheck("archive_command", "ok", shown, want)
    return PitrCheck("archive_command", "missing", shown, want, fix, s.apply or "reload")


def _max_wal_senders(s: _Setting) -> PitrCheck:
    want = "2 or more (base backups connect over the replication protocol)"
    count = int(s.value) if s.value and s.value.isdigit() else 0
    if count >= 2:
        return PitrCheck("max_wal_senders", "ok", s.shown(), want)
    return PitrCheck("max_wal_senders", "missing" if count == 0 else "advisable", s.shown(), want,
                     (_alter("max_wal_senders", "10"),), "restart")


def _replication_role(role: Any) -> PitrCheck:
    want = "REPLICATION (or superuser), for base backups"
    if role is None:
        return PitrCheck("role_replication", "missing", "(role not found)", want)
    name, replication, superuser = str(role[0]), bool(role[1]), bool(role[2])
    value = f"{name}: " + ("superuser" if superuser else "REPLICATION" if replication else "no REPLICATION")
    if replication or superuser:
        return PitrCheck("role_replication", "ok", value, want)
    return PitrCheck("role_replication", "missing", value, want,
                     (f'ALTER ROLE "{name}" REPLICATION;', "and a `replication` line for it in pg_hba.conf"),
                     "reload")


def _full_page_writes(s: _Setting) -> PitrCheck:
    if s.value == "on":
        return PitrCheck("full_page_writes", "ok", s.shown(), "on")
    return PitrCheck("full_page_writes", "advisable", s.shown(), "on (torn pages are otherwise unrecoverable)",
                     (_alter("full_page_writes", "on"),), "reload")


def _data_checksums(s: _Setting) -> PitrCheck:
    want = "on (damaged pages are found, not replayed over)"
    if s.value == "on":
        return PitrCheck("data_checksums", "ok", s.shown(), want)
    return PitrCheck("data_checksums", "advisable", s.shown(), want,
                     ("stop the server, then: pg_checksums --enable -D <data directory>",), "restart")


def _archive_timeout(s: _Setting) -> PitrCheck:
    want = f"{RECOMMENDED_ARCHIVE_TIMEOUT_S}s or so: the most a quiet server's WAL waits to be archived (the RPO)"
    seconds = int(s.value) if s.value and s.value.isdigit() else 0
    if seconds > 0:
        return PitrCheck("archive_timeout", "ok", f"{seconds}s", want)
    return PitrCheck("archive_timeout", "advisable", s.shown(), want,
                     (_alter("archive_timeout", f"{RECOMMENDED_ARCHIVE_TIMEOUT_S}s"),), "reload")


def _archiver(row: Any) -> PitrCheck:
    want = "no failure since the last archived segment"
    if row is None:
        return PitrCheck("archiver", "ok", "(no statistics)", want)
    archived, last_wal, last_time, failed, failed_wal, failed_time = row
    value = f"{archived} archived (last {last_wal or '-'}), {failed} failed"
    if failed and failed_time is not None and (last_time is None or failed_time > last_time):
        when = f"{failed_time:%Y-%m-%d %H:%M:%S%z}"
        fix = "read the archive_command error in the server log and fix it; PostgreSQL retries the segment by itself"
        return PitrCheck("archiver", "missing", f"{value}; last failure {failed_wal} at {when}", want, (fix,))
    return PitrCheck("archiver", "ok", value, want)
