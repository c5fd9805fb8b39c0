"""`mastctl backends list`: every registered backend and whether it can run here."""

from __future__ import annotations

from typing import Annotated

import typer

from mastctl import registry
from mastctl.cli import state

app = typer.Typer(help="Installed backends (detectors, stores, embedders, teachers).", no_args_is_help=True)


@app.command("list")
def list_backends(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only one kind: detector, store, embedder or teacher.")] = None,
) -> None:
    """List backends: name, kind, available or why not, and who provides it.

    Examples:  mastctl backends list   ·   mastctl --json backends list --kind detector
    """
    out = state(ctx).out
    rows = []
    for info in registry.backends(kind):
        ok, why = info.status()
        rows.append({"name": info.name, "kind": info.kind, "available": ok, "reason": why or None,
                     "provider": info.distribution, "target": info.target})
    if not rows:
        out.result(rows, message="no backends registered")
        return
    out.result(rows, table=(
        None,
        ["name", "kind", "available", "provider", "note"],
        [[r["name"], r["kind"], "yes" if r["available"] else "no", r["provider"] or "", r["reason"] or ""] for r in rows],
    ))
