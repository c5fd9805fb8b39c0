"""The one output layer: results to stdout (a table, or JSON with --json),
messages to stderr (hidden by --quiet, details shown by --verbose).

rich is imported only when something is actually printed, so that
``mastctl --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mastctl.errors import redact


@dataclass
class Output:
    json_mode: bool = False
    quiet: bool = False
    verbose: bool = False
    _consoles: dict[str, Any] = field(default_factory=dict, repr=False)

    def _console(self, stream: str):
        if stream not in self._consoles:
            from rich.console import Console

            target = sys.stderr if stream == "err" else sys.stdout
            # Piped output (logs, CI) gets room for whole tables instead of rich's 80 columns.
            width = None if target.isatty() else 160
            self._consoles[stream] = Console(stderr=(stream == "err"), highlight=False, soft_wrap=True, width=width)
        return self._consoles[stream]

    # ------------------------------------------------------------------ results (stdout)

    def data(self, payload: Any) -> None:
        """Machine-readable result, one JSON document on stdout."""
        text = json.dumps(payload, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write(redact(text) + "\n")
        sys.stdout.flush()

    def text(self, text: str) -> None:
        """Raw text result on stdout (e.g. YAML, CSV)."""
        text = redact(text)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        from rich.table import Table

        table = Table(title=title, show_lines=False, header_style="bold")
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if v is None else redact(str(v)) for v in row))
        self._console("out").print(table)

    def result(self, payload: Any, *, table: tuple[str | None, Sequence[str], Sequence[Sequence[Any]]] | None = None,
               text: str | None = None, message: str | None = None) -> None:
        """A command's result: ``payload`` as JSON with --json; otherwise a table, text on stdout, or a
        message on stderr (whichever is given). Commands call this once instead of branching on --json."""
        if self.json_mode:
            self.data(payload)
        elif table is not None:
            self.table(*table)
        elif text is not None:
            self.text(text)
        elif message is not None:
            self.info(message)

    # ------------------------------------------------------------------ messages (stderr)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._console("err").print(redact(message), markup=False)

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._console("err").print(redact(message), markup=False, style="dim")

    def warn(self, message: str) -> None:
        self._console("err").print(f"mastctl: warning: {redact(message)}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        """One failure among several (the others go on): a line on stderr, always shown."""
        sys.stderr.write(f"mastctl: error: {redact(message)}\n")
        sys.stderr.flush()

    def hint(self, message: str) -> None:
        """What to try next, after a result or an error (hidden by --quiet)."""
        if not self.quiet:
            self._console("err").print(f"hint: {redact(message)}", markup=False, style="cyan")

    def progress(self, total: int, unit: str | None = None):
        """A progress bar on stderr (a no-op when quiet or for one item); ``unit`` adds a rate (tiles/s)."""
        if self.quiet or total <= 1:
            return _NoProgress()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed or 0:.1f} {unit}/s")

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if unit:
            columns.append(Rate())
        columns.append(TimeRemainingColumn())
        return Progress(*columns, console=self._console("err"), transient=True)


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None
