"""Terminal output: tables, sizes, the progress bar, the one-line error."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from vaultflow import progress

# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns; give them room.
# markup=False: messages hold names, paths and install hints such as `vaultflow[sqlserver]`,
# whose brackets rich would take for markup and drop.
stdout = Console(soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, soft_wrap=True, markup=False, width=None if sys.stderr.isatty() else 400)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    stdout.print(table)


def error(line: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(line)}", highlight=False, markup=True)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """Show bytes read, bytes stored and the rate of the running stream on a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    bar = Progress(
        TextColumn("{task.description}"),
        TextColumn("read {task.fields[read]}"),
        TextColumn("stored {task.fields[stored]}"),
        TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(),
        console=stderr, transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def listen(report: progress.ProgressReport) -> None:
        key = f"{report.operation} {report.subject}"
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=None, read="", stored="", rate="")
        bar.update(tasks[key], read=human_bytes(report.bytes_read),
                   stored=human_bytes(report.bytes_stored), rate=human_bytes(int(report.rate)))

    progress.add_listener(listen)
    try:
        with bar:
            yield
    finally:
        progress.remove_listener(listen)
