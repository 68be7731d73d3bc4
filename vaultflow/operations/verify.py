"""Integrity checks of snapshots: quick (every chunk present with its size) or deep
(every chunk downloaded, authenticated, decompressed and re-hashed, and each stream's
BLAKE3 or SHA-256 digest recomputed); and of the archived change logs (`verify_logs`): the
gaps in each cluster's WAL and each server's binlogs, and deep, every log object opened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from vaultflow.engines.log_archive import LogProblem, log_problems
from vaultflow.errors import IntegrityError, SnapshotNotFound
from vaultflow.operations.retention import RetentionPolicy, decide
from vaultflow.repository.locks import RepositoryLock
from vaultflow.repository.manifest import SnapshotManifest
from vaultflow.repository.repository import Repository


@dataclass
class SnapshotVerdict:
    snapshot: str
    database: str = ""
    exists: bool = False
    size_match: bool = False
    checksum_match: bool | None = None  # None: not checked (quick mode)
    not_expired: bool = True
    damaged_chunks: dict[str, str] = field(default_factory=dict)  # chunk id -> problem
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.exists and self.size_match and self.checksum_match is not False and not self.error

    def as_dict(self) -> dict[str, object]:
        return {"snapshot": self.snapshot, "database": self.database, "exists": self.exists,
                "size_match": self.size_match, "checksum_match": self.checksum_match,
                "not_expired": self.not_expired, "valid": self.valid,
                "damaged_chunks": self.damaged_chunks, "error": self.error}


def verify_snapshots(
    repo: Repository, snapshot_ids: list[str] | None = None, *, deep: bool = False,
    policy: RetentionPolicy | None = None, now: datetime | None = None,
) -> list[SnapshotVerdict]:
    """Check the given snapshots (default: all). Never raises for damage: reports it. `deep`
    (reading every chunk) needs a restore key; the shallow check (manifests, chunk presence and
    sizes) works with a backup key."""
    if deep:
        repo.require("restore", "verify --deep")
    with RepositoryLock(repo, "shared", "verify", wait=60):
        ids = snapshot_ids if snapshot_ids is not None else repo.snapshot_ids()
        verdicts: list[SnapshotVerdict] = []
        manifests: list[SnapshotManifest] = []
        sizes_by_chain: dict[str, dict[str, int]] = {}
        for sid in ids:
            verdict = SnapshotVerdict(snapshot=sid)
            verdicts.append(verdict)
            try:
                m = repo.load_manifest(sid)
            except (SnapshotNotFound, IntegrityError) as exc:
                verdict.error = exc.line()
                continue
            manifests.append(m)
            verdict.exists = True
            verdict.database = f"{m.engine}://{m.server}/{m.database}"
            sizes = sizes_by_chain.setdefault(m.chain, repo.chain_chunks(m.chain))
            for stream in m.streams:
                for c in stream.chunks:
                    if c.id not in sizes:
                        verdict.damaged_chunks[c.id] = "missing"
                    elif sizes[c.id] != c.stored:
                        verdict.damaged_chunks[c.id] = f"size {sizes[c.id]} != {c.stored}"
            verdict.size_match = not verdict.damaged_chunks
            if deep:
                verdict.checksum_match = _deep_check(repo, m, verdict)
        if policy is not None and manifests:
            from vaultflow.operations.prune import facts

            kept = decide(facts(list(repo.manifests())), policy, now or datetime.now().astimezone()).keep
            for v in verdicts:
                v.not_expired = v.snapshot in kept
    return verdicts


def _deep_check(repo: Repository, m: SnapshotManifest, verdict: SnapshotVerdict) -> bool:
    ok = True
    for stream in m.streams:
        total = stream.hasher()
        stream_ok = True
        for c in stream.chunks:
            if c.id in verdict.damaged_chunks:
                stream_ok = False
                continue
            try:
                total.update(repo.load_chunk(m.id, m.chain, c))
            except IntegrityError as exc:
                verdict.damaged_chunks[c.id] = exc.what
                stream_ok = False
        if stream_ok and total.hexdigest() != stream.digest:
            verdict.error = f"stream {stream.name!r} does not match its recorded digest"
            stream_ok = False
        ok = ok and stream_ok
    return ok


def broken_by_chunk(verdicts: list[SnapshotVerdict]) -> dict[str, list[str]]:
    """Damaged chunk id -> the snapshots it breaks."""
    out: dict[str, list[str]] = {}
    for v in verdicts:
        for cid in v.damaged_chunks:
            out.setdefault(cid, []).append(v.snapshot)
    return out


def verify_logs(repo: Repository, *, deep: bool = False) -> list[LogProblem]:
    """Every gap in the archived WAL/binlogs that cuts a recoverable window short (naming the first
    missing file and the time it cuts off), and with `deep` every archived log object that fails to
    open; through each engine's LogArchive hook. Never raises for damage: reports it."""
    with RepositoryLock(repo, "shared", "verify", wait=60):
        return log_problems(repo, list(repo.manifests()), deep=deep)
