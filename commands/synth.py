"""`mastctl synth OUT_DIR`: synthetic paired H&E / tryptase-IHC tiles with exact truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.errors import UsageError

HELP = """Render synthetic paired H&E / tryptase-IHC tiles with their truth.

Each tile gives <stem>_he.png, <stem>_ihc.png and <stem>.json (mpp, the
H&E->IHC transform, every cell with its type, kind and IHC position). The same
--seed always gives the same tiles.

[bold]Examples[/bold]

  mastctl synth val/ --n 20 --seed 7                 [dim]# 20 tiles, 512 px at 0.5 um/px[/dim]
  mastctl synth val40x/ --n 10 --mpp 0.25 --jpeg 80  [dim]# 40x, with JPEG artefacts[/dim]
  mastctl synth mct/ --n 10 --style sheet            [dim]# sheets of round cells, mostly mast cells[/dim]
  mastctl compare val/ --truth val/ --backends log   [dim]# score a detector on them[/dim]
"""


def synth(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder for the tiles (created).", show_default=False)],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of tiles.")] = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed: same seed, same tiles.")] = 0,
    size: Annotated[int, typer.Option("--size", min=64, max=4096, help="Tile side in pixels.")] = 512,
    mpp: Annotated[float, typer.Option("--mpp", min=0.1, max=2.0, help="Micrometres per pixel (0.25 = 40x, 0.5 = 20x).")] = 0.5,
    jpeg: Annotated[int | None, typer.Option("--jpeg", min=10, max=100, help="Add JPEG artefacts at this quality (files stay PNG).", show_default=False)] = None,
    style: Annotated[str, typer.Option("--style", help="gut (the classic), sheet (a sheet of round cells, like a mast cell tumour), carcinoma (epithelial nests), faded (other stains and camera, coarse nuclei: the style no shipped model learned).")] = "gut",
    force: Annotated[bool, typer.Option("--force", help="Replace tiles already in OUT_DIR.")] = False,
) -> None:
    from mastctl import synth as synth_domain

    out = state(ctx).out
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; synth writes into a folder")
    existing = [p for i in range(n) if (p := out_dir / f"{synth_domain.tile_stem(seed, i)}.json").exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists ({len(existing)} of {n} tiles); pass --force to replace them")
    options = synth_domain.SynthOptions(size=size, mpp=mpp, jpeg_quality=jpeg, style=style)
    options.look  # an unknown style is a usage error before anything is drawn
    with out.progress(n) as bar:
        task = bar.add_task("render", total=n)
        written = synth_domain.generate(out_dir, n, seed, options, on_tile=lambda i: bar.advance(task))
    out.result([{k: str(v) for k, v in paths.items()} for paths in written],
               message=f"wrote {len(written)} tile pairs to {out_dir} ({size} px, {mpp} um/px, seed {seed}, style {style})")
