"""The files engine: file:// directory trees backed up as one tar stream and restored by a swap."""

from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import blake3
import pytest

from tests.conftest import PASSPHRASE
from vaultflow.engines import engine_from_url
from vaultflow.engines.base import DroppableDatabase, ServerWideObjects
from vaultflow.engines.capabilities import CapabilityMissing
from vaultflow.engines.files.engine import DUMP_FORMAT, FileTreeEngine, UnsafeMember
from vaultflow.engines.registry import spec
from vaultflow.errors import InputError, SourceUnreadable, TargetNotEmpty
from vaultflow.operations.backup import backup_database, plan_backup
from vaultflow.operations.restore import restore_snapshot
from vaultflow.repository import Repository, SnapshotManifest, new_object_id
from vaultflow.repository.manifest import SnapshotKind, StreamManifest
from vaultflow.requests import BackupRequest, RestoreRequest
from vaultflow.storage import LocalStore

MTIME_NS = 1_700_000_000_123_456_789


def nasty_tree(root: Path) -> Path:
    """Nested dirs, an empty dir, an empty file, symlinks, 4-byte UTF-8 and spaces in names,
    a 5 MB random file, an exec bit, a read-only dir, odd mtimes."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty dir").mkdir()
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "empty").write_bytes(b"")
    (root / "with space.txt").write_text("spaces\n")
    (root / "emoji 😀𝄞").mkdir()
    (root / "emoji 😀𝄞" / "𠜎.bin").write_bytes(b"\x00\xff" * 100)
    (root / "a" / "random.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    script = root / "a" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "a" / "link-in").symlink_to("b/c/deep.txt")
    (root / "link-out").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("nowhere/at/all")
    (root / "ro").mkdir()
    (root / "ro" / "kept").write_text("read only dir\n")
    (root / "a" / "secret").write_text("0600\n")
    (root / "a" / "secret").chmod(0o600)
    os.utime(root / "a" / "b" / "c" / "deep.txt", ns=(MTIME_NS, MTIME_NS))
    not_utf8 = os.path.join(os.fsencode(root), b"latin1-\xe9t\xe9")
    os.mkdir(not_utf8)
    Path(os.fsdecode(os.path.join(not_utf8, b"caf\xe9"))).write_text("latin-1 names\n")
    if os.geteuid() == 0:
        os.lchown(root / "a" / "secret", 1234, 5678)
    (root / "ro").chmod(0o555)
    return root


def describe_tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below root: kind, mode, mtime_ns, owner and content digest or link target."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: object = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = "dir"
            else:
                what = ("file", blake3.blake3(path.read_bytes()).hexdigest())
            out[str(path.relative_to(root))] = (what, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid)
    return out


def backup(repo: Repository, url: str, kind: SnapshotKind = "full", **kw: list[str]) -> SnapshotManifest:
    engine = engine_from_url(url)
    sid = new_object_id()
    return backup_database(engine, repo, BackupRequest(**kw),
                           snapshot_id=sid, plan=plan_backup(repo, engine, kind, sid))


def stored_bytes(repo_path: Path) -> int:
    return sum(p.stat().st_size for p in repo_path.rglob("*") if p.is_file())


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    return Repository.open(LocalStore(repo_path), PASSPHRASE)


def test_round_trip_of_a_nasty_tree(repo: Repository, tmp_path: Path) -> None:
    src = nasty_tree(tmp_path / "src")
    manifest = backup(repo, f"file://{src}")
    assert [s.format for s in manifest.streams] == [DUMP_FORMAT]
    assert {t.name for t in manifest.tables} == {".", "a", "empty dir", "emoji 😀𝄞", "ro",
                                                  "latin1-\\xe9t\\xe9"}
    a = next(t for t in manifest.tables if t.name == "a")
    assert a.rows == 8 and a.checksum and a.checksum.split(":")[1] == str(5 * 1024 * 1024 + 5 + 18 + 5)

    dest = tmp_path / "restored" / "here"
    restore_snapshot(repo, manifest.id, engine_from_url(f"file://{dest}"))
    assert describe_tree(dest) == describe_tree(src)
    assert stat.S_IMODE(dest.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)
    assert FileTreeEngine(dest).table_stats() == FileTreeEngine(src).table_stats() == manifest.tables
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")], "staging left behind"


def test_unchanged_tree_is_skipped_and_an_identical_stream_dedupes(repo: Repository, repo_path: Path,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "uploads"
    src.mkdir()
    for n in range(3):
        (src / f"big{n}.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    (src / "small.txt").write_text("v1\n")
    url = f"file://{src}"
    first = backup(repo, url)
    assert backup(repo, url).streams[0].blake3 == first.streams[0].blake3, "unchanged tree, other stream bytes"

    before = stored_bytes(repo_path)
    skipped = backup(repo, url, "incremental")
    assert skipped.reused_from is not None and skipped.fingerprint == first.fingerprint
    assert stored_bytes(repo_path) - before < 64 * 1024

    (src / "small.txt").write_text("v2\n")
    before = stored_bytes(repo_path)
    changed = backup(repo, url, "incremental")
    assert changed.reused_from is None and changed.fingerprint != first.fingerprint
    assert stored_bytes(repo_path) - before < 5 * 1024 * 1024, "a one-line change stored most of the tree again"


def test_include_and_exclude_are_path_globs(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "site"
    for rel in ("uploads/2025/a.jpg", "uploads/2025/a.tmp", "config/app.ini", "cache/x", "README"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    m = backup(repo, f"file://{src}", include_tables=["uploads", "README"], exclude_tables=["*.tmp"])
    dest = tmp_path / "out"
    restore_snapshot(repo, m.id, engine_from_url(f"file://{dest}"))
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["README", "uploads/2025/a.jpg"]
    assert m.table_filter == ["include:uploads", "include:README", "exclude:*.tmp"]


def test_restore_refuses_a_non_empty_target_and_replace_swaps(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "new.txt").write_text("new\n")
    m = backup(repo, f"file://{src}")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old.txt").write_text("old\n")
    target = engine_from_url(f"file://{dest}")
    with pytest.raises(TargetNotEmpty, match="--replace"):
        restore_snapshot(repo, m.id, target)
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    restore_snapshot(repo, m.id, target, RestoreRequest(replace=True))
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "repo", "src"], "staging or old tree left behind"

    (tmp_path / "empty").mkdir()
    restore_snapshot(repo, m.id, engine_from_url(f"file://{tmp_path / 'empty'}"))
    assert (tmp_path / "empty" / "new.txt").read_text() == "new\n"


def crafted_stream(members: list[tuple[tarfile.TarInfo, bytes]]) -> tuple[StreamManifest, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buf.getvalue()
    return StreamManifest(name="tree", format=DUMP_FORMAT, size=len(raw), blake3=blake3.blake3(raw).hexdigest(),
                          chunks=[]), raw


def dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


@pytest.mark.parametrize("evil", ["../evil", "/etc/evil", "a/../../evil", "link/evil"])
def test_a_tar_escaping_the_target_is_refused(tmp_path: Path, evil: str) -> None:
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
    members = [(dir_info("."), b""), (dir_info("a"), b""), (link, b""), (tarfile.TarInfo(evil), b"pwned")]
    stream, raw = crafted_stream(members)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeMember, match="nothing was restored"):
        FileTreeEngine(dest).restore([stream], lambda _s, sink: sink.write(raw))
    assert not dest.exists() and not (tmp_path / "evil").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    dest.mkdir()
    (dest / "old.txt").write_text("old\n")
    with pytest.raises(UnsafeMember):
        FileTreeEngine(dest).restore([stream], lambda _s, sink: sink.write(raw), replace=True)
    assert [p.name for p in dest.iterdir()] == ["old.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_an_unreadable_file_fails_the_backup_in_one_line(repo: Repository, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run as root, whom chmod 000 does not stop: the open is refused instead.
    src = tmp_path / "src"
    (src / "private").mkdir(parents=True)
    (src / "private" / "key.pem").write_text("k")
    (src / "public.txt").write_text("p")
    real_open = FileTreeEngine._open_file

    def refuse(self: FileTreeEngine, path: str):  # type: ignore[no-untyped-def]
        if path.endswith("key.pem"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(self, path)

    monkeypatch.setattr(FileTreeEngine, "_open_file", refuse)
    with pytest.raises(SourceUnreadable) as caught:
        backup(repo, f"file://{src}")
    line = caught.value.line()
    assert "\n" not in line and str(src / "private" / "key.pem") in line and "--exclude-table" in line
    assert repo.snapshot_ids() == []
    assert backup(repo, f"file://{src}", exclude_tables=["private"]).tables[0].rows == 1


def test_fifos_and_sockets_are_skipped_with_a_warning(repo: Repository, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("d")
    os.mkfifo(src / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        m = backup(repo, f"file://{src}")
    finally:
        sock.close()
    assert "pipe: sockets, FIFOs and device files are not backed up" in caplog.text
    dest = tmp_path / "dest"
    restore_snapshot(repo, m.id, engine_from_url(f"file://{dest}"))
    assert [p.name for p in dest.iterdir()] == ["data.txt"]


def test_urls_and_capabilities_refuse_in_one_line(tmp_path: Path) -> None:
    for url, words in [("file://host/srv/x", "host"), ("file:///", "root"), ("file:///srv/x?a=1", "query")]:
        with pytest.raises(InputError, match=words):
            engine_from_url(url)
    engine = engine_from_url(f"file://{tmp_path}/../{tmp_path.name}/x")
    assert isinstance(engine, FileTreeEngine) and engine.path == tmp_path / "x" and engine.database == "x"
    with pytest.raises(InputError, match="does not exist"):
        engine.fingerprint()
    with pytest.raises(CapabilityMissing, match="restoring chosen tables"):
        engine.restore([], lambda _s, _k: None, tables=["a"])
    assert not isinstance(engine, DroppableDatabase | ServerWideObjects)  # refused by the spec, not by hooks
    with pytest.raises(CapabilityMissing, match="drills"):
        spec("files").require("drills", "choose another scratch server")
    with pytest.raises(CapabilityMissing, match="--globals"):
        spec("files").require("globals", "drop --globals for file trees")


def test_a_file_shrinking_during_the_backup_fails_it(repo: Repository, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "growing.log").write_text("0123456789")
    monkeypatch.setattr(FileTreeEngine, "_open_file", lambda self, path: io.BytesIO(b"01234"))
    with pytest.raises(SourceUnreadable, match="growing.log shrank while the backup read it; back up again"):
        backup(repo, f"file://{src}")
    assert repo.snapshot_ids() == []
