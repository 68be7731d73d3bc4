"""Child processes for dump and restore tools: secrets by environment, a hard deadline."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

_NOT_FOR_CHILDREN = frozenset({"VAULTFLOW_PASSPHRASE"})


@dataclass(frozen=True)
class Deadline:
    """One deadline for a whole run: each tool started under it gets only the time left,
    so a run of many tools cannot take many times its timeout."""

    seconds: float | None
    at: float | None

    @classmethod
    def start(cls, seconds: float | None) -> Deadline:
        return cls(seconds, time.monotonic() + seconds if seconds else None)

    def remaining(self) -> float | None:
        """Seconds left (at least a millisecond, so a tool started late is killed at once)."""
        return None if self.at is None else max(self.at - time.monotonic(), 0.001)


class ToolProcess:
    """A running tool with its stderr kept (last 64 KiB) and a kill-on-deadline watchdog.

    Secrets go in `env`, never in `argv`. Always use as a context manager: leaving the
    context kills a child that is still running.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        timeout: float | None = None,
    ) -> None:
        # The repository passphrase is this process's secret, not the tool's.
        child_env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_CHILDREN}
        if env:
            child_env.update(env)
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv, env=child_env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
            bufsize=0 if stdout is None else 1024 * 1024,
        )
        if stdout is not None and self.proc.stdout is not None:
            _widen_pipe(self.proc.stdout.fileno())
        if stdin is not None and self.proc.stdin is not None:
            _widen_pipe(self.proc.stdin.fileno())
        self._stderr = bytearray()
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self.timed_out = False
        self._timer: threading.Timer | None = None
        if timeout:
            self._timer = threading.Timer(timeout, self._on_deadline)
            self._timer.daemon = True
            self._timer.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(lambda: self.proc.stderr.read(8192), b""):  # type: ignore[union-attr]
            self._stderr += line
            if len(self._stderr) > 65536:
                del self._stderr[: len(self._stderr) - 65536]

    def _on_deadline(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self) -> int:
        code = self.proc.wait()
        self._drain.join(timeout=5)
        if self._timer:
            self._timer.cancel()
        return code

    def stderr_text(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace").strip()

    def last_error_line(self) -> str:
        lines = [ln for ln in self.stderr_text().splitlines() if ln.strip()]
        for ln in lines:
            if "error:" in ln.lower() or "fatal" in ln.lower():
                return ln.strip()
        return lines[-1].strip() if lines else ""

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.wait()


_PIPE_SIZE = 1024 * 1024


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: far fewer wake-ups between the tool and us."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (OSError, AttributeError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works
