"""`vaultflow pitr check` for MySQL/MariaDB: is the server ready for point-in-time recovery
from its binary log (a snapshot's recorded binlog position, then the binlogs after it)?

Reads the binlog settings and the connecting user's grants; changes nothing. `log_bin`
needs the server's config file and a restart; `binlog_format`, `binlog_row_image` and the
expiry can be set at run time (SET GLOBAL, also to be put in the config file to survive a
restart). The result's note says how the binlogs reach the repository.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pymysql

from vaultflow.engines.pitr_readiness import PitrCheck, PitrReadiness

if TYPE_CHECKING:
    from vaultflow.engines.mysql.engine import MySQLEngine

MIN_RETENTION_DAYS = 7
"""Binlogs must outlive the interval between full snapshots; a week covers weekly fulls."""
STREAM_NOTE = ("vaultflow records each snapshot's binlog position; run vaultflow binlog-stream to copy the "
             "binlogs into the repository, then vaultflow pitr restore mysql://... --to-time/--to-position/--to-gtid")
_VARIABLES = ("log_bin", "server_id", "binlog_format", "binlog_row_image", "expire_logs_days",
              "binlog_expire_logs_seconds", "gtid_strict_mode", "log_bin_basename")


def check_binlog_readiness(engine: MySQLEngine) -> PitrReadiness:
    """Read the server's binlog settings and the user's grants (one connection, read only)."""
    with engine.connect() as c, c.cursor() as cur:
        values: dict[str, str] = {}
        for name in _VARIABLES:
            try:
                cur.execute(f"SELECT @@GLOBAL.{name}")
                row = cur.fetchone()
            except pymysql.MySQLError:
                continue  # a variable this flavour or version does not have
            values[name] = "" if row is None or row[0] is None else str(row[0])
        cur.execute("SHOW GRANTS")
        grants = " ".join(str(r[0]) for r in cur.fetchall()).upper()
        cur.execute("SELECT CURRENT_USER(), VERSION()")
        user, version = (str(v) for v in cur.fetchone() or ("?", "?"))
    checks = (_log_bin(values), _server_id(values), _binlog_format(values), _row_image(values),
              _retention(values), _privileges(grants, user))
    return PitrReadiness(engine.server_label(), version, checks, note=STREAM_NOTE)


def _log_bin(v: dict[str, str]) -> PitrCheck:
    on = v.get("log_bin") in ("1", "ON")
    return PitrCheck("log_bin", "ok" if on else "missing", "ON" if on else "OFF", "ON",
                     () if on else ("[mysqld] log_bin = mysql-bin   # in the server's config file",),
                     "" if on else "restart")


def _server_id(v: dict[str, str]) -> PitrCheck:
    value = v.get("server_id", "0")
    if value not in ("", "0"):
        return PitrCheck("server_id", "ok", value, "not 0")
    return PitrCheck("server_id", "missing", value or "0", "not 0 (unique among your servers)",
                     ("SET GLOBAL server_id = 1;", "[mysqld] server_id = 1   # in the server's config file"), "config")


def binlog_format_risk(value: str) -> str:
    """What replaying a binlog of this format risks; "" for ROW."""
    if value == "ROW":
        return ""
    if value == "STATEMENT":
        return ("STATEMENT replays statements, and non-deterministic ones (NOW(), UUID(), LIMIT without "
                "ORDER BY) give other rows on replay")
    return "MIXED logs some statements as statements"


def _binlog_format(v: dict[str, str]) -> PitrCheck:
    value = v.get("binlog_format", "")
    if value == "ROW":
        return PitrCheck("binlog_format", "ok", value, "ROW")
    risk = binlog_format_risk(value)
    return PitrCheck("binlog_format", "advisable", f"{value} ({risk})", "ROW",
                     ("SET GLOBAL binlog_format = 'ROW';", "[mysqld] binlog_format = ROW   # in the config file"),
                     "config")


def _row_image(v: dict[str, str]) -> PitrCheck:
    value = v.get("binlog_row_image", "")
    if value in ("", "FULL"):
        return PitrCheck("binlog_row_image", "ok", value or "(not used)", "FULL")
    return PitrCheck("binlog_row_image", "advisable", value, "FULL (replays and audits see whole rows)",
                     ("SET GLOBAL binlog_row_image = 'FULL';", "[mysqld] binlog_row_image = FULL"), "config")


def _retention(v: dict[str, str]) -> PitrCheck:
    seconds = int(v.get("binlog_expire_logs_seconds") or 0)
    days = float(v.get("expire_logs_days") or 0)
    kept = seconds / 86400 if seconds else days
    if not kept:
        return PitrCheck("binlog retention", "ok", "never expire (watch the disk)", f">= {MIN_RETENTION_DAYS} days")
    shown = f"{kept:g} days"
    if kept >= MIN_RETENTION_DAYS:
        return PitrCheck("binlog retention", "ok", shown, f">= {MIN_RETENTION_DAYS} days")
    variable = "binlog_expire_logs_seconds" if "binlog_expire_logs_seconds" in v else "expire_logs_days"
    value = str(MIN_RETENTION_DAYS * 86400) if variable == "binlog_expire_logs_seconds" else str(MIN_RETENTION_DAYS)
    return PitrCheck("binlog retention", "advisable",
                     f"{shown}: binlogs older than the oldest kept snapshot cannot be replayed",
                     f">= {MIN_RETENTION_DAYS} days (longer than the time between full snapshots)",
                     (f"SET GLOBAL {variable} = {value};", f"[mysqld] {variable} = {value}"), "config")


def missing_replication_privileges(grants: str) -> list[str]:
    """Which of REPLICATION SLAVE, REPLICATION CLIENT (MariaDB: or BINLOG MONITOR) the upper-cased
    SHOW GRANTS text lacks."""
    has_all = bool(re.search(r"GRANT ALL PRIVILEGES ON \*\.\*", grants))
    return [p for p in ("REPLICATION SLAVE", "REPLICATION CLIENT") if not has_all and p not in grants
            and not (p == "REPLICATION CLIENT" and "BINLOG MONITOR" in grants)]


def _privileges(grants: str, user: str) -> PitrCheck:
    needed = missing_replication_privileges(grants)
    if not needed:
        return PitrCheck("replication privileges", "ok", f"{user} may read the binlog", "REPLICATION SLAVE, CLIENT")
    name, _, host = user.rpartition("@")
    return PitrCheck("replication privileges", "missing", f"{user} lacks {', '.join(needed)}",
                     "REPLICATION SLAVE and REPLICATION CLIENT (MariaDB: or BINLOG MONITOR), to stream the binlog",
                     (f"GRANT {', '.join(needed)} ON *.* TO '{name}'@'{host}';",))
