"""A PostgreSQL database's own properties: what CREATE DATABASE and ALTER DATABASE set.

pg_dump writes these only with --create, which a per-table snapshot does not use, so a
backup records them in its schema stream's meta and a restore creates its database with
them: encoding and locale (which decide what text can be stored and how it sorts, and so
the order of text keys), the database's own settings, comment, connection limit, owner
and privileges (GRANT ... ON DATABASE), and the settings of roles in this database
(ALTER ROLE ... IN DATABASE ... SET).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

# pg_dump's variable_is_guc_list_quote(): settings whose value is a list of names, each
# element quoted by itself (SET search_path TO 'a', 'b', not one string 'a, b').
_LIST_SETTINGS = frozenset({"local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"})

_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}
_DATABASE_PRIVILEGES = frozenset({"CONNECT", "CREATE", "TEMPORARY"})

READ_PROPERTIES = """
SELECT to_jsonb(d) - 'datacl', pg_encoding_to_char(d.encoding), pg_get_userbyid(d.datdba),
       shobj_description(d.oid, 'pg_database'),
       (SELECT coalesce(array_agg(u.s ORDER BY u.n), '{}') FROM pg_db_role_setting r,
               unnest(r.setconfig) WITH ORDINALITY AS u(s, n)
         WHERE r.setdatabase = d.oid AND r.setrole = 0),
       CASE WHEN d.datacl IS NOT NULL THEN
         (SELECT coalesce(jsonb_agg(jsonb_build_array(CASE WHEN a.grantee = 0 THEN NULL
                                                          ELSE pg_get_userbyid(a.grantee) END,
                                                     a.privilege_type, a.is_grantable)
                                    ORDER BY a.grantee, a.privilege_type), '[]')
            FROM aclexplode(d.datacl) a WHERE a.grantee <> d.datdba) END,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(pg_get_userbyid(r.setrole), u.s) ORDER BY r.setrole, u.n), '[]')
          FROM pg_db_role_setting r, unnest(r.setconfig) WITH ORDINALITY AS u(s, n)
         WHERE r.setdatabase = d.oid AND r.setrole <> 0)
FROM pg_database d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class DatabaseProperties:
    """As the source database had them; `locale` is the ICU or builtin locale (None for libc)."""

    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "libc"
    locale: str | None = None
    icu_rules: str | None = None
    owner: str | None = None
    comment: str | None = None
    connection_limit: int = -1
    settings: list[str] = field(default_factory=list)  # "name=value", as pg_db_role_setting keeps them
    # [grantee (None: PUBLIC), privilege, grantable] besides the owner's; None: the defaults
    grants: list[list[Any]] | None = None
    role_settings: list[list[str]] = field(default_factory=list)  # [role, "name=value"] (ALTER ROLE IN DATABASE)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> DatabaseProperties:
        """From one row of READ_PROPERTIES (any server version: the catalog columns come as JSON)."""
        d, encoding, owner, comment, settings, grants, role_settings = row
        return cls(encoding=str(encoding), collate=str(d["datcollate"]), ctype=str(d["datctype"]),
                   locale_provider=_PROVIDERS.get(str(d.get("datlocprovider") or "c"), "libc"),
                   locale=d.get("datlocale") or d.get("daticulocale"), icu_rules=d.get("daticurules"),
                   owner=owner, comment=comment, connection_limit=int(d.get("datconnlimit", -1)),
                   settings=[str(s) for s in settings or []], grants=grants,
                   role_settings=[[str(r), str(v)] for r, v in role_settings or []])

    def to_meta(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_meta(cls, text: str) -> DatabaseProperties:
        props = cls(**json.loads(text))
        if props.locale_provider not in _PROVIDERS.values():  # it goes into SQL as a keyword
            raise ValueError(f"unknown locale provider {props.locale_provider!r}")
        return props

    def describe(self) -> str:
        locale = f"{self.locale_provider} locale {self.locale!r}" if self.locale else \
            f"locale {self.collate!r}" + (f"/{self.ctype!r}" if self.ctype != self.collate else "")
        return f"encoding {self.encoding} and {locale}"

    def create_options(self, server_major: int) -> sql.Composed:
        """The options of CREATE DATABASE ... TEMPLATE template0 that reproduce the encoding
        and locale on a server of this major version; ValueError if it cannot."""
        opts: list[sql.Composable] = [sql.SQL("ENCODING {}").format(sql.Literal(self.encoding)),
                sql.SQL("LC_COLLATE {}").format(sql.Literal(self.collate)),
                sql.SQL("LC_CTYPE {}").format(sql.Literal(self.ctype))]
        if self.locale_provider == "libc":
            if server_major >= 15:
                opts.append(sql.SQL("LOCALE_PROVIDER libc"))
        else:
            need = 17 if self.locale_provider == "builtin" else 16 if self.icu_rules else 15
            if server_major < need:
                raise ValueError(f"PostgreSQL {server_major} has no {self.locale_provider} locale provider"
                                 + (" with ICU rules" if self.icu_rules else "") + f" (it needs {need} or later)")
            keyword = "BUILTIN_LOCALE" if self.locale_provider == "builtin" else "ICU_LOCALE"
            opts += [sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(self.locale_provider)),
                     sql.SQL(keyword + " {}").format(sql.Literal(self.locale))]
            if self.icu_rules:
                opts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(self.icu_rules)))
        return sql.SQL(" ").join(opts)

    def setting_statements(self, database: str) -> list[tuple[str, sql.Composed]]:
        """(what, ALTER DATABASE ... SET statement) for each of the database's settings."""
        return [(f"setting {entry.partition('=')[0]}", sql.SQL("ALTER DATABASE {} SET {}").format(
            sql.Identifier(database), _assignment(entry))) for entry in self.settings]

    def role_setting_statements(self, database: str) -> list[tuple[str, sql.Composed]]:
        """(what, ALTER ROLE ... IN DATABASE ... SET statement) for each role's setting here."""
        return [(f"setting {entry.partition('=')[0]} of role {role}",
                 sql.SQL("ALTER ROLE {} IN DATABASE {} SET {}").format(
                     sql.Identifier(role), sql.Identifier(database), _assignment(entry)))
                for role, entry in self.role_settings]


    def grant_statements(self, database: str) -> list[tuple[str, sql.Composed]]:
        """(what, statement) that give the database the source's privileges: PUBLIC's
        defaults revoked, then each grant of the source (none when it kept the defaults)."""
        if self.grants is None:
            return []
        db = sql.Identifier(database)
        out = [("privileges of PUBLIC", sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))]
        for grantee, privilege, grantable in self.grants:
            if privilege not in _DATABASE_PRIVILEGES:
                continue
            who = sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)
            out.append((f"{privilege} for {grantee or 'PUBLIC'}", sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), db, who, sql.SQL(" WITH GRANT OPTION" if grantable else ""))))
        return out


def _assignment(entry: str) -> sql.Composed:
    """`name TO value` for a "name=value" entry of pg_db_role_setting."""
    name, _, value = entry.partition("=")
    values = split_setting_list(value) if name.lower() in _LIST_SETTINGS else [value]
    return sql.SQL("{} TO {}").format(sql.Identifier(name), sql.SQL(", ").join(sql.Literal(v) for v in values))


def split_setting_list(value: str) -> list[str]:
    """The elements of a list setting as PostgreSQL stores it (`"$user", public`): comma
    separated, each either a double-quoted name ("" is a quote) or a bare word."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(value[i])
                i += 1
            out.append("".join(chars))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            word = value[start:i].strip()
            if word:
                out.append(word)
        while i < n and value[i] != ",":
            i += 1
        i += 1  # past the comma
    return out
