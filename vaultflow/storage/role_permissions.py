"""The storage permissions each repository key role needs: an S3 IAM policy and an Azure SAS
permission set per role (backup, restore, admin; docs/design.md section 3).

The key roles are enforced by cryptography; these keep the storage identity of each role from
doing more than its role: a backup worker's credentials can add objects and read them, delete
only its own repository locks (`locks/`), and never write the config, keys, exports or links;
only the admin's credentials delete snapshots and chunks. docs/storage.md shows exactly these
policies (tests/storage/test_role_permissions.py compares them, runs each role's commands through
moto with IAM enforced under these policies, and through Azurite with these SAS sets).
"""

from __future__ import annotations

from typing import Literal

StorageRole = Literal["backup", "restore", "admin"]
STORAGE_ROLES: tuple[StorageRole, ...] = ("backup", "restore", "admin")

READ_AND_ADD = ("s3:GetObject", "s3:PutObject", "s3:GetObjectRetention", "s3:PutObjectRetention")
"""What every role does under the prefix. The retention pair is for object-locked repositories:
S3 needs s3:PutObjectRetention to put an object with a lock, which can extend a retention but
never shorten one without s3:BypassGovernanceRetention (granted to no role here)."""
LOCK_REMOVAL = ("s3:DeleteObject", "s3:DeleteObjectVersion")
"""Every command that takes a repository lock deletes its own lock object (every version of it on
an object-locked bucket): the only delete a backup or restore identity gets, on `locks/*`."""
ADMIN_OBJECT_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                        "s3:DeleteObjectVersion", "s3:GetObjectRetention", "s3:PutObjectRetention")
ADMIN_BUCKET_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketVersioning",
                        "s3:GetBucketObjectLockConfiguration")
NEVER_WRITTEN_BY: dict[StorageRole, tuple[str, ...]] = {
    "backup": ("config", "keys/*", "exports/*", "links/*"),
    "restore": ("config", "keys/*"),
    "admin": (),
}
"""Keys under the prefix a role's identity may not put: the config and key objects are admin's
(init, upgrade, key add/remove/passwd); exports and links are written by `export --url`, a
restore key's command, and a backup worker has no business writing plaintext next to the
repository."""

AZURE_SAS_PERMISSIONS: dict[StorageRole, str] = {"backup": "rcwdl", "restore": "rcwdl", "admin": "rcwdxl"}
"""Container SAS permissions per role (read, create, write, delete, delete version, list). A
container SAS cannot be confined to `locks/`, so backup and restore keep `d` for their own lock
objects; what protects the data from them is blob versioning on the account with `x` (delete a
version) withheld: a deleted or overwritten blob stays as a previous version (docs/storage.md)."""


def s3_policy(role: StorageRole, bucket: str, prefix: str) -> dict[str, object]:
    """The IAM policy (JSON) for `role`'s identity on the repository at s3://bucket/prefix."""
    if role not in STORAGE_ROLES:
        raise ValueError(f"unknown storage role {role!r}")
    root = f"arn:aws:s3:::{bucket}/{prefix.strip('/')}/" if prefix.strip("/") else f"arn:aws:s3:::{bucket}/"
    if role == "admin":
        statements: list[dict[str, object]] = [
            {"Sid": "ListRepository", "Effect": "Allow", "Action": list(ADMIN_BUCKET_ACTIONS),
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Sid": "EveryObjectOfTheRepository", "Effect": "Allow", "Action": list(ADMIN_OBJECT_ACTIONS),
             "Resource": root + "*"},
        ]
    else:
        statements = [
            {"Sid": "ListRepository", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Sid": "ReadAndAddObjects", "Effect": "Allow", "Action": list(READ_AND_ADD), "Resource": root + "*"},
            {"Sid": "RemoveItsOwnLocks", "Effect": "Allow", "Action": list(LOCK_REMOVAL),
             "Resource": root + "locks/*"},
            {"Sid": "NeverWriteAdminObjects", "Effect": "Deny", "Action": ["s3:PutObject"],
             "Resource": [root + key for key in NEVER_WRITTEN_BY[role]]},
        ]
    return {"Version": "2012-10-17", "Statement": statements}
