"""The typer app and what every command module shares: the --repo/--json/--verbose options,
`handles_errors` (one error line, documented exit codes), the passphrase prompt, opening a
repository, and the checks made before a flow run starts.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or input.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from vaultflow.cli.output import error
from vaultflow.errors import InputError, VaultflowError
from vaultflow.repository import Repository, open_repository
from vaultflow.repository.passphrase import passphrase_from_environment
from vaultflow.storage import open_store

app = typer.Typer(name="vaultflow", no_args_is_help=True, add_completion=False,
                  help="Database backups, restores and drills as Prefect flows.")

RepoOpt = Annotated[str | None, typer.Option("--repo", "-r", envvar="VAULTFLOW_REPO",
                                             help="Repository path, s3://bucket/prefix, az://container/prefix, "
                                                  "or a BackupRepository block name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs.")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaultflowError as exc:
            error(exc.line())
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error("interrupted; no snapshot was recorded for the unfinished run")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except ValidationError as exc:
            detail = exc.errors()[0]
            where = ".".join(str(p) for p in detail["loc"]) or exc.title
            error(f"invalid {where}: {detail['msg']}")
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence, still one line
            name = type(exc).__name__
            code = 2 if name in ("ParameterTypeError", "SignatureMismatchError") else 1
            first = (str(exc).strip().splitlines() or [""])[0]
            error(f"{name}: {first[:400]}")
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


# -- repository access ------------------------------------------------------------------

def is_location(ref: str) -> bool:
    return "/" in ref or "://" in ref or ref.startswith((".", "~"))


def require_repo(repo: str | None) -> str:
    if not repo:
        raise InputError("no repository given", "pass --repo PATH or set VAULTFLOW_REPO")
    return repo


def ask_passphrase(*, confirm: bool = False) -> str:
    """VAULTFLOW_PASSPHRASE or VAULTFLOW_PASSPHRASE_FILE, else ask on a terminal (the answer
    goes into VAULTFLOW_PASSPHRASE: the flow in this process reads the environment)."""
    value = passphrase_from_environment()
    if value:
        return value
    if not sys.stdin.isatty():
        raise InputError("no repository passphrase",
                         "set VAULTFLOW_PASSPHRASE or VAULTFLOW_PASSPHRASE_FILE, or run on a terminal")
    value = getpass.getpass("repository passphrase: ")
    if confirm and getpass.getpass("repeat passphrase: ") != value:
        raise InputError("the two passphrases differ", "run the command again")
    if not value:
        raise InputError("empty passphrase", "type a passphrase or set VAULTFLOW_PASSPHRASE")
    os.environ["VAULTFLOW_PASSPHRASE"] = value
    return value


def open_repo(repo: str | None) -> tuple[Repository, str | None]:
    """Open a repository given as a path (env passphrase) or a block name (its passphrase)."""
    ref = require_repo(repo)
    if is_location(ref):
        store = open_store(ref)
        Repository.read_config(store)
        return open_repository(ref, ask_passphrase()), os.environ.get("VAULTFLOW_CATALOG_URL")
    from blocks.resolve import resolve_repository

    resolved = resolve_repository(ref)
    return resolved.open(), resolved.catalog_url


def quiet_prefect(verbose: bool) -> None:
    """Keep the terminal to our own output; the run logs still reach the Prefect API."""
    # The embedded (ephemeral) API server migrates a new database on first start, which
    # takes longer than Prefect's default wait on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.CRITICAL + 1)


def check_database_url(ref: str, action: Literal["backup", "restore"]) -> None:
    """Refuse a bad database URL (one with a password above all), or one that cannot do
    `action` (SQL Server without staging), before a flow run stores it."""
    from vaultflow.engines import engine_from_url, is_database_url

    if is_database_url(ref):
        engine_from_url(ref).check_configuration(action)


def check_file_tree_url(ref: str, action: Literal["backup", "restore"]) -> None:
    """Refuse a file:// URL of a backup set that is bad, or names no directory to back up,
    or a URL of another engine, before a flow run starts (block names are checked by the run)."""
    from vaultflow.engines import engine_from_url, is_database_url

    if not is_database_url(ref):
        return
    engine = engine_from_url(ref)
    if engine.engine != "files":
        raise InputError(f"{engine.describe()} is not a file tree",
                         "give file trees as file:///dir or the name of a FileTree block")
    engine.check_configuration(action)


FilesOpt = Annotated[list[str] | None, typer.Option(
    "--files", help="A file tree (file:///dir or FileTree block name) backed up after the database in the same "
                    "run, as one backup set; repeat for several.")]
FilesToOpt = Annotated[list[str] | None, typer.Option(
    "--files-to", help="Where each file tree of the snapshot's backup set goes (file:///dir or FileTree block "
                       "name), in the order `vaultflow show` lists them; repeat once per tree.")]


def prepare_flow_run(repo: str | None, verbose: bool) -> str:
    """Check a path repository and get its passphrase before Prefect starts, then quiet Prefect."""
    ref = require_repo(repo)
    if is_location(ref):
        Repository.read_config(open_store(ref))
        ask_passphrase()
    quiet_prefect(verbose)
    return ref


def request_option(model: type[BaseModel], field: str, *param_decls: str) -> Any:
    """A typer option for one field of a request model, with the field's default and its
    description as help (declared once, in vaultflow/requests.py). A list field's option
    repeats and defaults to None (read it as `value or []`). Bounds are checked when the
    CLI builds the request, so a bad value is one `invalid <field>` line, exit 2."""
    info = model.model_fields[field]
    default = None if info.default_factory is not None else info.default
    return typer.Option(default, *param_decls, help=info.description, show_default=default is not None)
