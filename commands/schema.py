"""`mastctl schema NAME`: the JSON Schema of a document mastctl writes."""

from __future__ import annotations

from typing import Annotated

import typer

from mastctl.cli import state

HELP = """Print the JSON Schema of a document mastctl writes: detections (detect -o x.json),
slide-summary (OUT.summary.json beside a slide's output) or compare (compare --json).

[bold]Examples[/bold]

  mastctl schema detections > detections.schema.json
  mastctl schema compare | jq .properties
"""


def schema(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="detections, slide-summary or compare.", show_default=False)],
) -> None:
    from mastctl import schemas

    state(ctx).out.text(schemas.text(name))
