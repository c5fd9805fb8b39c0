"""JSON Lines: one object per line, blank lines skipped, errors naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mastctl.errors import InputError


MAX_LINE_BYTES = 16 * 1024 * 1024


def objects(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line; a line longer than ``max_line_bytes`` is refused unread."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        n = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            n += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise InputError(f"{path}:{n}: a line longer than {max_line_bytes // (1024 * 1024)} MB; "
                                 "one record (crop included) is far smaller")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{n}: not UTF-8 text: {exc.reason}") from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n}: not JSON: {exc.msg}") from None
            except ValueError as exc:
                raise InputError(f"{path}:{n}: {exc}") from None
            except RecursionError:
                raise InputError(f"{path}:{n}: nested too deeply to be a record") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (write a finite number)")
