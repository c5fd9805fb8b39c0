"""`mastctl kb ...`: the knowledge base of annotated example cells."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mastctl.cli import state
from mastctl.commands import options as O
from mastctl.errors import InputError, UsageError

if TYPE_CHECKING:
    from mastctl.kb.records import CellRecord
    from mastctl.kb.service import KnowledgeBase

app = typer.Typer(help="Knowledge base of annotated example cells (LanceDB, Chroma, Pinecone).", no_args_is_help=True)

Store = Annotated[str | None, typer.Option("--store", help="lancedb | chroma | pinecone (default: kb.store of the profile).", show_default=False)]
Uri = Annotated[str | None, typer.Option("--kb", help="Store location: a folder, or an index host for pinecone (default: kb.uri).", show_default=False)]
Types = Annotated[list[str] | None, typer.Option("--type", help="Only this type: explicit, implicit, negative (repeatable).", show_default=False)]
Labels = Annotated[list[str] | None, typer.Option("--label", help="Only this label, e.g. lymphocyte (repeatable).", show_default=False)]
Difficulty = Annotated[list[str] | None, typer.Option("--difficulty", help="Only easy, medium or hard (repeatable).", show_default=False)]
Mpp = Annotated[float | None, O.mpp("Micrometres per pixel of the images (overrides files).")]


def _profile(ctx: typer.Context, store: str | None, uri: str | None):
    profile = state(ctx).loaded.profile
    update = {k: v for k, v in (("store", store), ("uri", uri)) if v}
    if update:
        profile = profile.model_copy(update={"kb": profile.kb.model_copy(update=update)})
    return profile


def _open(ctx: typer.Context, store: str | None, uri: str | None, check: bool = True) -> KnowledgeBase:
    """A reader's knowledge base (no lock)."""
    from mastctl.kb.service import KnowledgeBase

    return KnowledgeBase.open(_profile(ctx, store, uri), check=check)


def _writing(ctx: typer.Context, store: str | None, uri: str | None, create: bool = False, check: bool = True):
    """A writer's knowledge base: it waits for any other writer of the same store, and a store
    it created is removed again when the command fails before storing anything."""
    from mastctl.kb.service import KnowledgeBase

    return KnowledgeBase.session(_profile(ctx, store, uri), create=create, check=check, on_wait=state(ctx).out.info)


def _filter(types: list[str] | None = None, labels: list[str] | None = None, difficulty: list[str] | None = None):
    from mastctl.kb.records import DIFFICULTIES, NEGATIVE_LABELS, RECORD_TYPES
    from mastctl.kb.store import Filter

    values: dict[str, tuple[str, ...]] = {}
    for name, given, allowed in (("type", types, RECORD_TYPES), ("label", labels, ("mast_cell", *NEGATIVE_LABELS)),
                                 ("difficulty", difficulty, DIFFICULTIES)):
        if given:
            bad = [v for v in given if v not in allowed]
            if bad:
                raise UsageError(f"--{name} {bad[0]!r} is not one of {', '.join(allowed)}")
            values[name] = tuple(given)
    return Filter(values)


def _summary(record: CellRecord) -> list[Any]:
    xy = f"{record.coordinates.x:g},{record.coordinates.y:g}" if record.coordinates else ""
    return [record.id, record.cell_type, record.difficulty, f"{record.confidence:.2f}", record.image_path or "", xy]


def _write_report(ctx: typer.Context, result, what: str) -> None:
    st = state(ctx)
    st.out.result(result.to_dict(), message=f"{what}: {result.added} added, {result.updated} updated, {result.unchanged} unchanged")


@app.command("add")
def add(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", help="A JSON or YAML file: one record or a list of them.", show_default=False)] = None,
    record_id: Annotated[str | None, typer.Option("--id", help="Record id (default: from the image and the point).", show_default=False)] = None,
    rtype: Annotated[str | None, typer.Option("--type", help="explicit | implicit | negative.", show_default=False)] = None,
    label: Annotated[str | None, typer.Option("--label", help="For negatives: lymphocyte, plasma_cell, fibroblast, eosinophil, other.", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", help="The H&E image holding the cell (its crop is stored).", show_default=False)] = None,
    x: Annotated[float | None, typer.Option("--x", help="Nucleus centre, pixels.", show_default=False)] = None,
    y: Annotated[float | None, typer.Option("--y", help="Nucleus centre, pixels.", show_default=False)] = None,
    ihc_image: Annotated[Path | None, typer.Option("--ihc-image", help="The matching IHC image.", show_default=False)] = None,
    confidence: Annotated[float, typer.Option("--confidence", min=0.0, max=1.0)] = 1.0,
    difficulty: Annotated[str, typer.Option("--difficulty", help="easy | medium | hard.")] = "medium",
    nucleus: Annotated[str, typer.Option("--nucleus", help="Nucleus description.")] = "",
    cytoplasm: Annotated[str, typer.Option("--cytoplasm", help="Cytoplasm description.")] = "",
    shape: Annotated[str, typer.Option("--shape", help="Cell shape description.")] = "",
    location: Annotated[str, typer.Option("--location", help="Where in the tissue.")] = "",
    insight: Annotated[list[str] | None, typer.Option("--insight", help="An insight (repeatable).", show_default=False)] = None,
    source: Annotated[str, typer.Option("--source", help="Where the example comes from.")] = "manual",
    mpp: Mpp = None,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Add (or replace, by id) records given by flags or in a file.

    Examples:  mastctl kb add --image tile.png --x 195 --y 190 --type explicit --insight "dirty halo"
               mastctl kb add --file records.yaml
    """
    from mastctl.kb import sources as S
    from mastctl.kb.records import parse

    raws: list[dict[str, Any]]
    if file is not None:
        if any(v is not None for v in (record_id, rtype, label, image, x, y)):
            raise UsageError("give either --file or the record's flags, not both")
        raws = S.read_records_file(file)
        where = str(file)
    else:
        if rtype is None:
            raise UsageError("kb add needs --type (explicit, implicit or negative) or --file")
        if image is not None and (x is None or y is None):
            raise UsageError("--image needs --x and --y (the cell's nucleus centre)")
        if record_id is None and image is None:
            raise UsageError("give --id, or --image with --x/--y to derive one")
        raws = [{"id": record_id, "type": rtype, "label": label or ("mast_cell" if rtype != "negative" else None),
                 "image_path": str(image) if image else None, "ihc_image_path": str(ihc_image) if ihc_image else None,
                 "coordinates": {"x": x, "y": y} if x is not None and y is not None else None, "confidence": confidence,
                 "difficulty": difficulty, "morphological_features": {"nucleus": nucleus, "cytoplasm": cytoplasm, "shape": shape,
                                                                      "location": location},
                 "insights": list(insight or []), "source": source}]
        where = "record"
    with _writing(ctx, store, uri, create=True) as kb:
        records = []
        for n, raw in enumerate(raws, start=1):
            raw = {k: v for k, v in raw.items() if v is not None}
            records.append(S.with_crop(kb.crop_um, parse(S.with_derived_id(raw), where=f"{where} #{n}" if len(raws) > 1 else where),
                                      file.parent if file else Path.cwd(), mpp))
        result = kb.upsert(records)
    _write_report(ctx, result, f"kb add ({kb.store.location()})")


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    sources: Annotated[list[Path], typer.Argument(help="Records (.jsonl), or annotations: synth JSON, CSV points, QuPath GeoJSON, "
                                                  "`ihc transfer` output (files or folders).", show_default=False)],
    images: Annotated[list[Path] | None, typer.Option("--images", help="Folder of the annotated images (repeatable).", show_default=False)] = None,
    from_analysis: Annotated[bool, typer.Option("--from-analysis", help="The sources are analysis-results JSON (image_no, step1_coordinates, ...).")] = False,
    mast_only: Annotated[bool, typer.Option("--mast-only", help="Skip annotated look-alikes (by default they become negative examples).")] = False,
    source: Annotated[str | None, typer.Option("--source", help="Source name stored in each record (default: the file name).", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes cutting and embedding crops (0: one per CPU, at most 4).")] = 0,
    mpp: Mpp = None,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Bulk-add records: cells of annotation files with crops cut from their images, or JSONL records.

    Re-running adds nothing new (records are keyed by image and point); a run killed half-way
    leaves every finished batch in the store, and running it again completes it.

    Examples:  mastctl kb ingest synth/ --images synth/
               mastctl kb ingest labels.geojson --images slides/ --mpp 0.25
               mastctl kb ingest kb-export.jsonl
               mastctl kb ingest analysis_results.json --from-analysis --images pairs/
    """
    from mastctl.kb import sources as S
    from mastctl.kb.service import WriteResult, read_jsonl

    st = state(ctx)
    for p in sources:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    with _writing(ctx, store, uri, create=True) as kb:
        folders = list(images or [])
        n_workers = workers or min(4, os.cpu_count() or 1)
        total = WriteResult()
        n_images = sum(S.images_in(p, from_analysis) for p in sources)
        with st.out.progress(n_images, unit="images") as bar:
            task = bar.add_task("ingest", total=n_images)
            for path in sources:
                if path.suffix.lower() == ".jsonl":
                    total += kb.upsert(S.with_crop(kb.crop_um, r, path.parent, mpp) for r in read_jsonl(path))
                    bar.advance(task)
                else:
                    if from_analysis:
                        batches = S.analysis_batches(path, folders, embedder=kb.image_embedder(), mpp=mpp, crop_um=kb.crop_um)
                    else:
                        batches = S.truth_batches(path, folders, embedder=kb.image_embedder(), mpp=mpp, crop_um=kb.crop_um,
                                                  include_negatives=not mast_only, source=source, workers=n_workers)
                    def pairs(batches=batches):  # every image's cells, written in full batches across images
                        for image_path, records, vectors in batches:
                            st.out.detail(f"{image_path}: {len(records)} cells")
                            bar.advance(task)
                            for record, vector in zip(records, vectors):
                                if source and from_analysis:
                                    record = record.model_copy(update={"source": source})
                                yield record, vector

                    total += kb.upsert_pairs(pairs())
    _write_report(ctx, total, f"kb ingest ({kb.store.location()})")


@app.command("search")
def search(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Option("--text", help="Find records described like this.", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", help="A crop of one cell (centred) to find look-alikes of.", show_default=False)] = None,
    cell: Annotated[tuple[Path, float, float] | None, typer.Option("--cell", help="IMAGE X Y: the cell at this point of an image.", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=1000, help="How many results.")] = 5,
    text_weight: Annotated[float, typer.Option("--text-weight", min=0.0, max=1.0, help="Share of the text score when text and image are both given.")] = 0.5,
    types: Types = None,
    labels: Labels = None,
    difficulty: Difficulty = None,
    mpp: Mpp = None,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Nearest example cells by text, by image, or both (cosine scores).

    Examples:  mastctl kb search --text "pale halo around a central nucleus" -k 3
               mastctl kb search --cell tile.png 195 190 --type explicit --type implicit
               mastctl kb search --image crop.png --mpp 0.25 --json
    """
    from mastctl import imaging
    from mastctl.kb import crops as C

    st = state(ctx)
    if image is not None and cell is not None:
        raise UsageError("give --image or --cell, not both")
    where = _filter(types, labels, difficulty)
    kb = _open(ctx, store, uri)
    crop = None
    if image is not None:
        img = imaging.load(image, mpp=mpp)
        crop = C.rescale(img.pixels, mpp or img.mpp or C.CROP_MPP)
    elif cell is not None:
        img = imaging.load(cell[0], mpp=mpp)
        if not (mpp or img.mpp):
            raise InputError(f"{cell[0]}: resolution unknown; give --mpp")
        crop = C.cut(img.pixels, mpp or img.mpp, cell[1], cell[2], kb.crop_um)
    hits = kb.search(text=text, crop=crop, k=k, where=where, text_weight=text_weight)
    st.out.result([{"score": round(h.score, 4), **h.record.to_json_dict(crop=False)} for h in hits],
                  table=(f"{len(hits)} nearest of {kb.count()} records", ["score", "id", "type", "difficulty", "confidence",
                         "image", "x,y"], [[f"{h.score:.3f}", *_summary(h.record)] for h in hits]))


@app.command("show")
def show(
    ctx: typer.Context,
    record_id: Annotated[str, typer.Argument(help="Record id.", show_default=False)],
    crop: Annotated[Path | None, typer.Option("--crop", help="Also save the record's crop to this PNG.", show_default=False)] = None,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """One record in full (JSON, without the crop's bytes).

    Example:  mastctl kb show synth_s9_0000-x195-y190 --crop cell.png
    """
    from mastctl.writers import atomic_write

    st = state(ctx)
    record = _open(ctx, store, uri, check=False).get(record_id)
    data = record.to_json_dict(crop=False)
    data["crop_png"] = f"<{len(record.crop_png)} bytes PNG, {record.crop_um:g} µm>" if record.crop_png else None
    if crop is not None:
        if not record.crop_png:
            raise InputError(f"record {record_id!r} has no crop")
        atomic_write(crop, lambda fh: fh.write(record.crop_png))
    st.out.data(data)


@app.command("list")
def list_records(
    ctx: typer.Context,
    types: Types = None,
    labels: Labels = None,
    difficulty: Difficulty = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")] = 50,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Records, ordered by id.

    Example:  mastctl kb list --type implicit --difficulty hard
    """
    st = state(ctx)
    kb = _open(ctx, store, uri, check=False)
    where = _filter(types, labels, difficulty)
    records = []
    for record in kb.records(where, crop=False):
        if limit and len(records) >= limit:
            break
        records.append(record)
    st.out.result([r.to_json_dict(crop=False) for r in records],
                  table=(f"{len(records)} of {kb.count(where)} records", ["id", "type", "difficulty", "confidence", "image", "x,y"],
                         [_summary(r) for r in records]))


@app.command("delete")
def delete(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Record ids.", show_default=False)],
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Delete records by id (an unknown id is an error, after the known ones are deleted).

    Example:  mastctl kb delete synth_s9_0000-x195-y190
    """
    st = state(ctx)
    with _writing(ctx, store, uri, check=False) as kb:
        existing = {r.id for r in kb.store.fetch(ids)}
        deleted = kb.delete([i for i in ids if i in existing])
    missing = [i for i in ids if i not in existing]
    st.out.result({"deleted": deleted, "not_found": missing}, message=f"deleted {deleted} record(s)")
    if missing:
        raise InputError(f"no record {missing[0]!r}" + (f" (and {len(missing) - 1} more unknown ids)" if len(missing) > 1 else ""))


@app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[Path, typer.Argument(help="JSONL file to write (records with their crops).", show_default=False)],
    types: Types = None,
    labels: Labels = None,
    difficulty: Difficulty = None,
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Every record (or those matching) to JSONL, crops included; `kb import` restores them exactly.

    Example:  mastctl kb export kb.jsonl && mastctl kb import kb.jsonl --store chroma --kb chroma-kb/
    """
    st = state(ctx)
    kb = _open(ctx, store, uri, check=False)
    n = kb.export(output, _filter(types, labels, difficulty))
    st.out.result({"exported": n, "file": str(output)}, message=f"exported {n} records to {output}")


@app.command("import")
def import_records(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSONL written by `kb export`.", show_default=False)],
    store: Store = None,
    uri: Uri = None,
) -> None:
    """Restore exported records exactly (ids, timestamps, crops), re-embedding them.

    Example:  mastctl kb import kb.jsonl
    """
    from mastctl.kb.service import read_jsonl

    if not file.is_file():
        raise InputError(f"{file}: no such file")
    with _writing(ctx, store, uri, create=True) as kb:
        result = kb.upsert(read_jsonl(file), keep_times=True)
    _write_report(ctx, result, f"kb import ({kb.store.location()})")


@app.command("stats")
def stats(ctx: typer.Context, store: Store = None, uri: Uri = None) -> None:
    """How many records of each type, label, difficulty and source; the embedders used."""
    st = state(ctx)
    data = _open(ctx, store, uri, check=False).stats()
    lines = [f"{data['records']} records in {data['location']} (schema {data['schema_version']}; text: "
             f"{data['text_embedder']}, image: {data['image_embedder']}, crops {data['crop_um']} µm)"]
    lines += [f"  {name[3:]}: " + (", ".join(f"{k} {v}" for k, v in data[name].items()) or "-")
              for name in ("by_type", "by_label", "by_difficulty", "by_source")]
    st.out.result(data, text="\n".join(lines))


@app.command("reindex")
def reindex(ctx: typer.Context, store: Store = None, uri: Uri = None) -> None:
    """Re-embed every record with the profile's embedders (after changing them)."""
    st = state(ctx)
    with _writing(ctx, store, uri, check=False) as kb, st.out.progress(kb.count(), unit="records") as bar:
        task = bar.add_task("reindex", total=kb.count())
        n = kb.reindex(on_batch=lambda k: bar.advance(task, k))
    st.out.result({"reindexed": n}, message=f"reindexed {n} records with {kb.text_name} + {kb.image_name}")
