"""The `vaultflow-wal` command: argument parsing, repository from the environment, exit codes.

    vaultflow-wal push %p          archive_command
    vaultflow-wal fetch %f %p      restore_command

The repository is `--repo` or VAULTFLOW_REPO (a path, file://, s3:// or az:// URL; not a block
name, which would need Prefect), with storage credentials from the usual environment, and the
passphrase from VAULTFLOW_PASSPHRASE or VAULTFLOW_PASSPHRASE_FILE.

Exit codes. push: 0 stored, or already stored with the same content; 1 failed (a different file
under that name, storage errors: PostgreSQL retries and counts a failure); 2 bad input or
configuration (wrong passphrase, no repository). fetch: 0 written; 1 not in the repository
(normal at the end of recovery); 126 every other error (PostgreSQL treats an exit status above
125 as fatal and stops recovery instead of ending it early at the wrong point).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vaultflow.engines.postgres.wal import WalNotArchived, fetch_wal, push_wal
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository.passphrase import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, passphrase_from_environment
from vaultflow.repository.repository import Repository, open_repository

REPO_ENV = "VAULTFLOW_REPO"
FETCH_NOT_FOUND_EXIT = 1
FETCH_FATAL_EXIT = 126
"""restore_command: PostgreSQL stops recovery on an exit status above 125 (any other non-zero
status means "no such file", after which recovery ends and the server may promote)."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaultflow-wal", description="PostgreSQL archive_command / restore_command for a "
                                                       "vaultflow repository.")
    parser.add_argument("--repo", help=f"repository path or URL (default: ${REPO_ENV})")
    sub = parser.add_subparsers(dest="action", required=True)
    push = sub.add_parser("push", help="archive one WAL file (archive_command = 'vaultflow-wal push %%p')")
    push.add_argument("path", help="%%p: the file to archive, relative to the data directory")
    push.add_argument("--pgdata", help="the cluster's data directory (default: the one holding pg_wal/, else cwd)")
    fetch = sub.add_parser("fetch", help="restore one WAL file (restore_command = 'vaultflow-wal fetch %%f %%p')")
    fetch.add_argument("name", help="%%f: the WAL file name to restore")
    fetch.add_argument("path", help="%%p: where to write it")
    fetch.add_argument("--pgdata", help="the cluster's data directory (default: the one holding pg_wal/, else cwd)")
    return parser


def open_repository_from_environment(repo: str | None) -> Repository:
    """The repository of `repo` or VAULTFLOW_REPO, opened with the environment's passphrase."""
    location = repo or os.environ.get(REPO_ENV)
    if not location:
        raise InputError("no repository given", f"set {REPO_ENV} (a path or URL) or pass --repo")
    if not ("/" in location or "://" in location or location.startswith((".", "~"))):
        raise InputError(f"repository {location!r} looks like a block name, which vaultflow-wal cannot read",
                         "give the repository's path or s3:// / az:// URL")
    passphrase = passphrase_from_environment()
    if passphrase is None:
        raise InputError("no repository passphrase", f"set {PASSPHRASE_FILE_ENV} (a 0600 file) or {PASSPHRASE_ENV}")
    return open_repository(location, passphrase)


def run_push(path: str, *, repo: str | None = None, pgdata: str | None = None) -> int:
    """archive_command: store one WAL file; the exit status PostgreSQL should see."""
    try:
        push_wal(open_repository_from_environment(repo), Path(path), pgdata=Path(pgdata) if pgdata else None)
    except VaultflowError as exc:
        _say("push", exc.line())
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last line of defence, still one line
        _say("push", _unexpected(exc))
        return 1
    return 0


def run_fetch(name: str, path: str, *, repo: str | None = None, pgdata: str | None = None) -> int:
    """restore_command: write one archived WAL file to `path`; 1 when it is not archived, 126 on
    any other error (fatal for PostgreSQL)."""
    try:
        fetch_wal(open_repository_from_environment(repo), name, Path(path), pgdata=Path(pgdata) if pgdata else None)
    except WalNotArchived as exc:
        _say("fetch", exc.line())
        return FETCH_NOT_FOUND_EXIT
    except VaultflowError as exc:
        _say("fetch", exc.line())
        return FETCH_FATAL_EXIT
    except Exception as exc:  # noqa: BLE001 - last line of defence, still one line
        _say("fetch", _unexpected(exc))
        return FETCH_FATAL_EXIT
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except _UsageError as exc:
        fatal = "fetch" in args_list
        _say("fetch" if fatal else "usage", f"{exc}; run vaultflow-wal --help")
        return FETCH_FATAL_EXIT if fatal else 2
    if args.action == "push":
        return run_push(args.path, repo=args.repo, pgdata=args.pgdata)
    return run_fetch(args.name, args.path, repo=args.repo, pgdata=args.pgdata)


def _unexpected(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:400]}"


def _say(action: str, line: str) -> None:
    print(f"vaultflow-wal {action}: {line}", file=sys.stderr, flush=True)
