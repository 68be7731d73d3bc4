"""S3 and S3-compatible object storage (AWS, MinIO, moto, ...) through a boto3 client.

One object per key under `prefix/` in one bucket. A PUT is atomic in S3, so no temp
objects are needed, and every acknowledged PUT is durable: `sync` has nothing to do.
boto3's own retries are off; this store raises `TransientError` at the first 5xx,
throttling reply or broken connection and `RetryingStore` (see `open_s3_store`) retries.
Permanent failures (403, missing bucket, no credentials) raise at once with one line.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import SecretStr

from vaultflow.errors import (
    AuthenticationFailed,
    InputError,
    ObjectLocked,
    StorageNotFound,
    TransientError,
    VaultflowError,
)
from vaultflow.storage.base import (
    ObjectInfo,
    ObjectLockPolicy,
    ObjectStore,
    SignedUrl,
    validate_key,
    validate_prefix,
)
from vaultflow.storage.retry import RetryingStore, RetryPolicy

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests", "503", "500", "502", "504"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
               "TokenRefreshRequired", "AllAccessDisabled", "403"}


def check_bucket(bucket: str) -> str:
    if not _BUCKET_RE.match(bucket):
        raise InputError(f"invalid S3 bucket name {bucket!r}",
                         "bucket names are 3-63 characters of a-z 0-9 . - (s3://bucket/prefix)")
    return bucket


def clean_prefix(prefix: str) -> str:
    """A store prefix: '/'-separated key segments without leading or trailing '/'."""
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix)
    return prefix


@dataclass(frozen=True)
class S3Settings:
    """Where an S3 repository lives and how to sign requests; None means boto3's default
    chain (AWS_* environment, shared config files, instance roles)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None
    concurrency: int = 8
    # A caller's own way to a boto3 Session (e.g. a prefect-aws block's get_boto3_session,
    # which handles profiles and assumed roles), called when the store is opened; then the
    # key, token and profile fields above are not used. `client_kwargs` go to session.client.
    session_factory: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    client_kwargs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def location(self) -> str:
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def open(self, retry: RetryPolicy | None = None) -> ObjectStore:
        return RetryingStore(S3Store(self), retry)


class S3Store(ObjectStore):
    """Objects as S3 objects `<prefix>/<key>` in `settings.bucket`.

    With an object lock policy (`use_object_lock`), every put of a key the policy covers carries
    ObjectLockMode, ObjectLockRetainUntilDate and Content-MD5 (S3 requires a checksum with lock
    parameters); a multipart upload gets its retention set afterwards with PutObjectRetention
    where the upload did not apply it (moto never does; S3 does from the bucket's default).
    `delete` then removes every version of the key, since a delete without a version id only
    adds a delete marker on a versioned bucket.
    """

    multipart_threshold = 64 * 2**20  # bytes; one part's size too (a class attribute, so tests can lower it)

    def __init__(self, settings: S3Settings) -> None:
        self._lock_policy: ObjectLockPolicy | None = None
        self.bucket = check_bucket(settings.bucket)
        self.prefix = clean_prefix(settings.prefix)
        self.concurrency = max(1, settings.concurrency)
        secret, token = settings.secret_access_key, settings.session_token
        try:
            if settings.session_factory is not None:
                session = settings.session_factory()
            else:
                session = boto3.session.Session(
                    aws_access_key_id=settings.access_key_id,
                    aws_secret_access_key=secret.get_secret_value() if secret else None,
                    aws_session_token=token.get_secret_value() if token else None,
                    region_name=settings.region,
                    profile_name=settings.profile,
                )
        except BotoCoreError as exc:  # an unknown profile
            raise InputError(f"cannot use the AWS settings for {self.describe()}: {type(exc).__name__}",
                             "check the profile name (AWS_PROFILE or the block's credentials)") from None
        except ClientError as exc:  # the block's session assumes a role, and STS refused
            raise AuthenticationFailed(f"AWS refused the credentials for {self.describe()} "
                                       f"({exc.response.get('Error', {}).get('Code', 'error')})",
                                       "check the role to assume and the credentials allowed to assume it in the "
                                       "block") from None
        kwargs = dict(settings.client_kwargs)
        endpoint_url = kwargs.pop("endpoint_url", settings.endpoint_url)
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # RetryingStore retries
            max_pool_connections=self.concurrency + 4,
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        if kwargs.get("config") is not None:  # the block's client config, ours winning on retries and pools
            config = kwargs.pop("config").merge(config)
        try:
            self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config, **kwargs)
        except ValueError as exc:  # a malformed endpoint URL
            raise InputError(f"invalid S3 endpoint URL {endpoint_url!r}: {exc}",
                             "give http(s)://host:port in AWS_ENDPOINT_URL or the block") from None
        self.endpoint = str(self.client.meta.endpoint_url)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _retention(self, key: str) -> tuple[str, datetime] | None:
        """(S3 mode, retain-until) for a put of `key` now, or None when it is written unlocked."""
        policy = self._lock_policy
        if policy is None or not policy.applies_to(key):
            return None
        return policy.mode.upper(), datetime.now(UTC) + policy.period

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        full = self._key(key)
        extra: dict[str, Any] = {}
        retention = self._retention(key)
        if retention is not None:
            md5 = hashlib.md5(data, usedforsecurity=False).digest()
            extra = {"ObjectLockMode": retention[0], "ObjectLockRetainUntilDate": retention[1],
                     "ContentMD5": base64.b64encode(md5).decode()}
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc, "put", key) from None

    def get(self, key: str) -> bytes:
        full = self._key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise self._map(exc, "get", key) from None
        except BotoCoreError as exc:
            raise self._map(exc, "get", key) from None

    def stat(self, key: str) -> ObjectInfo | None:
        full = self._key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._map(exc, "stat", key) from None
        except BotoCoreError as exc:
            raise self._map(exc, "stat", key) from None
        return ObjectInfo(key, int(head["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root + prefix, "MaxKeys": 1000}
            if token:
                args["ContinuationToken"] = token
            try:
                page = self.client.list_objects_v2(**args)
            except (ClientError, BotoCoreError) as exc:
                raise self._map(exc, "list", prefix or "(all)") from None
            for item in page.get("Contents", ()):
                yield ObjectInfo(str(item["Key"])[len(root):], int(item["Size"]), item.get("LastModified"))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        full = self._key(key)
        if self._lock_policy is not None:
            self._delete_versions(key, full)
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return
            raise self._map(exc, "delete", key) from None
        except BotoCoreError as exc:
            raise self._map(exc, "delete", key) from None

    def _delete_versions(self, key: str, full: str) -> None:
        """Delete every version and delete marker of `full`; ObjectLocked for a retained version
        (the versions before it in the listing are gone, the object itself stays readable)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        while True:
            try:
                page = self.client.list_object_versions(**args)
            except (ClientError, BotoCoreError) as exc:
                raise self._map(exc, "list versions", key) from None
            versions = [v for v in (*page.get("DeleteMarkers", ()), *page.get("Versions", ()))
                        if v.get("Key") == full]
            # Older versions first: a retained current version then leaves the object readable.
            for version in sorted(versions, key=lambda v: bool(v.get("IsLatest"))):
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=full, VersionId=version["VersionId"])
                except ClientError as exc:
                    if _code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                        continue
                    if _code(exc) == "AccessDenied":
                        raise self._locked(key, full, str(version["VersionId"])) from None
                    raise self._map(exc, "delete", key) from None
                except BotoCoreError as exc:
                    raise self._map(exc, "delete", key) from None
            if not page.get("IsTruncated"):
                return
            args["KeyMarker"], args["VersionIdMarker"] = page.get("NextKeyMarker"), page.get("NextVersionIdMarker")

    def _locked(self, key: str, full: str, version_id: str) -> VaultflowError:
        """The error for a refused version delete: ObjectLocked with its date when the version is retained."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full, VersionId=version_id)
        except ClientError as exc:
            if _code(exc) in ("403", "AccessDenied"):  # it may not read versions either: its policy refused
                return self._denied("delete", key, f"{self.describe()} at {self.endpoint}", "s3:DeleteObjectVersion")
            return self._map(exc, "delete", key)
        except BotoCoreError as exc:
            return self._map(exc, "delete", key)
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until <= datetime.now(UTC):
            until = None  # its retention has passed: the refusal is the identity's policy
        if until is None and head.get("ObjectLockLegalHoldStatus") != "ON":
            return self._denied("delete", key, f"{self.describe()} at {self.endpoint}", "s3:DeleteObjectVersion")
        when = until.astimezone(UTC).isoformat(timespec="seconds") if until is not None else ""
        return ObjectLocked(f"{key} in {self.describe()} is retained by object lock"
                            + (f" until {when}" if when else " (legal hold)"),
                            "it can be deleted once its retention has passed", until=when)

    def check_object_lock(self) -> None:
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
            enabled = lock.get("ObjectLockEnabled") == "Enabled"
        except ClientError as exc:
            if _code(exc) not in ("ObjectLockConfigurationNotFoundError", "InvalidRequest"):
                raise self._map(exc, "read object lock settings of", "(bucket)") from None
            enabled, lock = False, {}
        except BotoCoreError as exc:
            raise self._map(exc, "read object lock settings of", "(bucket)") from None
        if not enabled:
            raise InputError(f"S3 bucket {self.bucket!r} at {self.endpoint} does not have object lock enabled",
                             "create a new bucket with object lock enabled (aws s3api create-bucket "
                             "--object-lock-enabled-for-bucket); it cannot be turned on later for vaultflow")
        if lock.get("Rule", {}).get("DefaultRetention"):
            raise InputError(f"S3 bucket {self.bucket!r} at {self.endpoint} has a default retention",
                             "remove it (aws s3api put-object-lock-configuration with ObjectLockEnabled only): "
                             "vaultflow sets each object's retention, and a default would retain the lock objects "
                             "it must delete")
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc, "read versioning of", "(bucket)") from None
        if status != "Enabled":
            raise InputError(f"S3 bucket {self.bucket!r} at {self.endpoint} has versioning {status or 'off'}, "
                             "which object lock needs on",
                             f"enable it: aws s3api put-bucket-versioning --bucket {self.bucket} "
                             "--versioning-configuration Status=Enabled")

    def use_object_lock(self, policy: ObjectLockPolicy) -> None:
        self._lock_policy = policy

    def retained_until(self, key: str) -> datetime | None:
        full = self._key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._map(exc, "stat", key) from None
        except BotoCoreError as exc:
            raise self._map(exc, "stat", key) from None
        until = head.get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if until is not None else None

    def extend_retention(self, key: str, until: datetime) -> None:
        mode = (self._lock_policy.mode if self._lock_policy is not None else "governance").upper()
        try:
            self.client.put_object_retention(Bucket=self.bucket, Key=self._key(key),
                                             Retention={"Mode": mode, "RetainUntilDate": until})
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc, "set retention of", key) from None

    def put_file(self, key: str, path: Path) -> None:
        full = self._key(key)
        # 64 MiB parts: up to ~625 GiB in S3's 10,000 parts, at most 4 parts in memory.
        config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                multipart_chunksize=self.multipart_threshold,
                                max_concurrency=min(self.concurrency, 4))
        retention = self._retention(key)
        extra: dict[str, Any] = {}
        if retention is not None:  # S3 wants a checksum on every part of a locked upload
            extra = {"ObjectLockMode": retention[0], "ObjectLockRetainUntilDate": retention[1],
                     "ChecksumAlgorithm": "SHA256"}
        try:
            self.client.upload_file(str(path), self.bucket, full, Config=config, ExtraArgs=extra or None)
            if retention is not None:
                self._ensure_retention(key, retention[1])
        except S3UploadFailedError as exc:
            cause = exc.__context__
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise self._map(cause, "upload", key) from None
            raise TransientError(f"S3 upload of {key} to {self.describe()} at {self.endpoint} failed") from None
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc, "upload", key) from None

    def _ensure_retention(self, key: str, until: datetime) -> None:
        """Set the retention a multipart upload's parameters did not apply (moto ignores them)."""
        current = self.retained_until(key)
        if current is None or current < until - timedelta(seconds=1):
            self.extend_retention(key, until)

    def download_url(self, key: str, expires: timedelta) -> SignedUrl:
        """A presigned GET URL (SigV4 allows at most 7 days)."""
        if not timedelta(seconds=1) <= expires <= timedelta(days=7):
            raise InputError(f"a presigned S3 URL cannot be valid for {expires}", "choose from 1s to 7d")
        expires_at = datetime.now(UTC) + expires
        try:
            return SignedUrl(str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=int(expires.total_seconds()))), expires_at)
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc, "presign", key) from None

    def _map(self, exc: ClientError | BotoCoreError, op: str, key: str) -> VaultflowError:
        """One line per failure; never the request's signature or credentials."""
        where = f"{self.describe()} at {self.endpoint}"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return InputError(f"no usable AWS credentials for {self.describe()}",
                              "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a BackupRepository "
                              "block with AwsCredentials or MinIOCredentials")
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return TransientError(f"S3 endpoint {self.endpoint} did not answer ({type(exc).__name__})",
                                  "check AWS_ENDPOINT_URL (or the block's endpoint) and the network")
        if not isinstance(exc, ClientError):
            return VaultflowError(f"S3 {op} of {key} in {where} failed: {type(exc).__name__}")
        code = _code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StorageNotFound(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}",
                                   f"create it (aws s3 mb s3://{self.bucket}) or fix the bucket in --repo "
                                   "or the block")
        if code == "AccessDenied" and op in _PERMISSION_OF:
            return self._denied(op, key, where)
        if code in _AUTH_CODES or status == 403:
            return AuthenticationFailed(f"S3 refused {op} on {where} ({code})",
                                        "check the access key and secret (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                        "or the block's credentials) and the bucket's policy")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"S3 {op} of {key} in {where} failed with {code} (HTTP {status})")
        return VaultflowError(f"S3 {op} of {key} in {where} failed with {code} (HTTP {status})")


    def _denied(self, op: str, key: str, where: str, permission: str | None = None) -> VaultflowError:
        """AccessDenied from valid credentials: the permission the identity lacks, and which role's
        storage identity has it (docs/storage.md, storage permissions per role)."""
        permission = permission or _PERMISSION_OF[op]
        what = f"{op} of {key}" if key and not key.startswith("(") else op
        if op == "delete":
            fix = ("prune, forget and purge need the admin role's storage credentials "
                   "(docs/storage.md, storage permissions per role)")
        else:
            fix = (f"give these credentials {permission} on the repository "
                   "(docs/storage.md, storage permissions per role)")
        return AuthenticationFailed(f"S3 refused {what} on {where} (AccessDenied): the credentials lack {permission}",
                                    fix)


_PERMISSION_OF = {"put": "s3:PutObject", "upload": "s3:PutObject", "get": "s3:GetObject", "stat": "s3:GetObject",
                  "list": "s3:ListBucket", "delete": "s3:DeleteObject", "list versions": "s3:ListBucketVersions",
                  "set retention of": "s3:PutObjectRetention",
                  "read object lock settings of": "s3:GetBucketObjectLockConfiguration",
                  "read versioning of": "s3:GetBucketVersioning"}
"""The IAM action behind each store operation, named when S3 answers AccessDenied."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
