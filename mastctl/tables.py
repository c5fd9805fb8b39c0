"""CSV tables users write by hand (a cohort manifest, a list of H&E/IHC pairs), read strictly.

Header names are matched without case or surrounding spaces; every row must
have exactly the header's fields, and required cells must not be empty: a
bad row is an error naming its line, never a half-read table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mastctl.errors import InputError

MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the row in the file
    values: dict[str, str]

    def get(self, name: str) -> str:
        return self.values.get(name, "")


def read_table(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[Row]:
    """Rows of a CSV file with ``required`` (and maybe ``optional``) columns; other columns are ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: empty; it needs a header line with {', '.join(required)}")
            names = [h.strip().lower() for h in header]
            missing = [c for c in required if c not in names]
            if missing:
                raise InputError(f"{path}: needs a {missing[0]!r} column (header: {', '.join(required + optional)})")
            rows = []
            for values in reader:
                if not values or all(not v.strip() for v in values):
                    continue  # blank lines
                line = reader.line_num
                if len(values) != len(names):
                    raise InputError(f"{path}:{line}: {len(values)} fields where the header has {len(names)} "
                                     "(a comma inside a name needs quotes)")
                row = {n: v.strip() for n, v in zip(names, values)}
                empty = [c for c in required if not row[c]]
                if empty:
                    raise InputError(f"{path}:{line}: the {empty[0]!r} cell is empty")
                rows.append(Row(line, row))
                if len(rows) > MAX_ROWS:
                    raise InputError(f"{path}: more than {MAX_ROWS:,} rows")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        raise InputError(f"{path}: no rows under the header")
    return rows
