"""Command groups whose capability is not in this version yet.

Each says so in one line and exits 2, whatever it is given: no fake output.
"""

from __future__ import annotations

import typer

from mastctl.errors import UsageError

PLANNED = {
    "cube": (
        "The embedding-to-embedding trainer (3D Cubic Core).",
        "the embedding trainer (cube)",
    ),
}


def register(app: typer.Typer) -> None:
    for name, (summary, what) in PLANNED.items():
        app.command(
            name,
            help=f"{summary} [dim](not in this version yet)[/dim]",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_not_yet(name, what))


def _not_yet(name: str, what: str):
    def command(ctx: typer.Context) -> None:
        raise UsageError(f"{what} is not part of this version of mastctl yet")

    command.__name__ = f"{name}_command"
    return command
