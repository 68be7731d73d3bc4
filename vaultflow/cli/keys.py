"""`key add|list|remove|passwd` (repository keys and their roles) and `upgrade` (format 1 to 2).

A new passphrase comes from VAULTFLOW_NEW_PASSPHRASE or a terminal prompt, never from a flag.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

from vaultflow.cli.app import JsonOpt, RepoOpt, ask_passphrase, handles_errors, open_repo, require_repo
from vaultflow.cli.output import print_json, print_table, stdout
from vaultflow.errors import InputError

NEW_PASSPHRASE_ENV = "VAULTFLOW_NEW_PASSPHRASE"
key_app = typer.Typer(no_args_is_help=True, help="Repository keys: each a passphrase with a role "
                                                 "(backup, restore, admin).")


def new_passphrase() -> str:
    """VAULTFLOW_NEW_PASSPHRASE, else asked twice on a terminal."""
    value = os.environ.get(NEW_PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise InputError("no new passphrase", f"set {NEW_PASSPHRASE_ENV} or run on a terminal")
    value = getpass.getpass("new key's passphrase: ")
    if getpass.getpass("repeat it: ") != value:
        raise InputError("the two passphrases differ", "run the command again")
    if not value:
        raise InputError("empty passphrase", f"type a passphrase or set {NEW_PASSPHRASE_ENV}")
    return value


@key_app.command("add")
@handles_errors
def add(role: Annotated[str, typer.Option("--role", help="backup, restore or admin.")],
        repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """Add a key of a role (needs an admin key); its passphrase from VAULTFLOW_NEW_PASSPHRASE or a prompt."""
    from vaultflow.operations.keys import add_key
    from vaultflow.repository.keys import parse_role

    wanted = parse_role(role)
    opened, _ = open_repo(repo)
    opened.require("admin", "key add")
    key = add_key(opened, wanted, new_passphrase())
    if json_out:
        print_json({"key": key.id, "role": key.role})
    else:
        stdout.print(f"added {key.role} key {key.id[:8]} to the repository at {opened.store.describe()}")


@key_app.command("list")
@handles_errors
def list_keys(repo: RepoOpt = None, json_out: JsonOpt = False) -> None:
    """List the repository's keys (any role may list them); * marks the key opened."""
    opened, _ = open_repo(repo)
    if opened.version == 1:
        rows = [{"key": "", "role": "admin", "created": str(opened.config.get("created", "")), "current": True}]
    else:
        rows = [{"key": k.id, "role": k.role, "created": k.created, "current": k.id == opened.key_id}
                for k in sorted(opened.key_objects(), key=lambda k: (k.created, k.id))]
    if json_out:
        print_json(rows)
        return
    print_table(None, ["", "key", "role", "created"],
                [("*" if r["current"] else "", str(r["key"])[:8] or "(version 1: one passphrase)", r["role"],
                  r["created"]) for r in rows])


@key_app.command("remove")
@handles_errors
def remove(key_id: Annotated[str, typer.Argument(help="The key's id (or 4+ leading characters).")],
           repo: RepoOpt = None) -> None:
    """Remove a key (needs an admin key; the last admin key stays)."""
    from vaultflow.operations.keys import remove_key

    opened, _ = open_repo(repo)
    removed = remove_key(opened, key_id)
    stdout.print(f"removed {removed.role} key {removed.id[:8]}")


@key_app.command("passwd")
@handles_errors
def passwd(key_id: Annotated[str | None, typer.Argument(help="The key (default: the one opened).")] = None,
           repo: RepoOpt = None) -> None:
    """Give a key a new passphrase (needs an admin key): a new key of the same role replaces it."""
    from vaultflow.operations.keys import change_passphrase

    opened, _ = open_repo(repo)
    opened.require("admin", "key passwd")
    new, old = change_passphrase(opened, new_passphrase(), key_id)
    stdout.print(f"{new.role} key {old[:8]} replaced by key {new.id[:8]} with the new passphrase")


@key_app.command("storage-policy")
@handles_errors
def storage_policy(role: Annotated[str, typer.Option("--role", help="backup, restore or admin.")],
                   repo: RepoOpt = None) -> None:
    """Print the storage permissions a role's machines need on this repository: the S3 IAM policy
    (JSON), or the Azure container SAS permissions. Needs no passphrase (docs/storage.md)."""
    from vaultflow.cli.app import is_location
    from vaultflow.repository.keys import parse_role
    from vaultflow.storage.role_permissions import AZURE_SAS_PERMISSIONS, s3_policy

    wanted = parse_role(role)
    ref = require_repo(repo)
    if is_location(ref):
        location = ref
    else:
        from blocks.resolve import resolve_repository

        location = resolve_repository(ref).store().describe()
    scheme, _, rest = location.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme == "s3" and bucket:
        print_json(s3_policy(wanted, bucket, prefix))
    elif scheme == "az" and bucket:
        permissions = AZURE_SAS_PERMISSIONS[wanted]
        stdout.print(f"container SAS permissions for the {wanted} role on {location}: {permissions} (e.g. az storage "
                     f"container generate-sas --name {bucket} --permissions {permissions} --expiry ...)",
                     highlight=False)
    else:
        raise InputError(f"{location} is not an S3 or Azure repository",
                         "a local repository's permissions are its files' (give s3://bucket/prefix or "
                         "az://container/prefix)")


@handles_errors
def upgrade(repo: RepoOpt = None) -> None:
    """Upgrade a format version 1 repository in place to version 2 (key roles); its passphrase
    becomes the first admin key. Old snapshots stay readable and deduplication goes on."""
    from vaultflow.operations.keys import upgrade_repository
    from vaultflow.storage import open_store

    ref = require_repo(repo)
    if not ("/" in ref or "://" in ref or ref.startswith((".", "~"))):
        from blocks.resolve import resolve_repository

        resolved = resolve_repository(ref)
        assert resolved.passphrase is not None
        store, passphrase = resolved.store(), resolved.passphrase.get_secret_value()
    else:
        store = open_store(ref)
        from vaultflow.repository import Repository

        Repository.read_config(store)
        passphrase = ask_passphrase()
    upgraded, count = upgrade_repository(store, passphrase)
    stdout.print(f"repository {upgraded.id[:8]} at {store.describe()} is format version 2; admin key "
                 f"{upgraded.key_id[:8]} has its passphrase; {count} metadata object(s) re-sealed")
