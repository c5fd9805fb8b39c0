"""`mastctl config init | show | validate`: the YAML profile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.errors import ConfigError, UsageError

app = typer.Typer(help="Create, show and check the YAML profile.", no_args_is_help=True)


@app.command("init")
def init(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the profile; '-' for stdout.")] = Path("mastctl.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a profile with every key, its default and what it does.

    Examples:  mastctl config init   ·   mastctl config init lab.yaml   ·   mastctl config init - > example.yaml
    """
    from mastctl.profile import example_yaml

    out = state(ctx).out
    text = example_yaml()
    if str(path) == "-":
        out.text(text)
        return
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to replace it")
    from mastctl.writers import atomic_write

    atomic_write(path, lambda fh: fh.write(text.encode()))
    out.result({"written": str(path)}, message=f"wrote {path}; edit it, then check it with `mastctl config validate {path}`")


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the effective profile: file + ${VAR} interpolation + MASTCTL_* overrides.

    Examples:  mastctl config show   ·   MASTCTL_DETECT__MPP=0.25 mastctl --json config show
    """
    st = state(ctx)
    loaded = st.loaded
    data = loaded.profile.model_dump(mode="json")
    if st.out.json_mode:
        st.out.data({"source": loaded.source, "path": str(loaded.path) if loaded.path else None,
                     "overrides": list(loaded.overrides), "profile": data})
        return
    import yaml

    where = f"{loaded.source}" + (f" = {loaded.path}" if loaded.path and loaded.source != "--profile" else "")
    header = f"# effective profile (from {where}"
    header += f"; overridden by {', '.join(loaded.overrides)})" if loaded.overrides else ")"
    st.out.text(header + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@app.command("validate")
def validate(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="Profile to check (default: the one mastctl would use).", show_default=False)] = None,
) -> None:
    """Check a profile and list every problem with its YAML path and line.

    Examples:  mastctl config validate   ·   mastctl config validate lab.yaml
    """
    from mastctl.profile import find_profile, parse_profile_text

    st = state(ctx)
    file, source = (path, "argument") if path is not None else find_profile(st.profile_path, os.environ)
    if file is not None and not file.is_file():
        raise ConfigError(f"profile {file} does not exist" if not file.exists() else f"profile {file} is not a file")
    text = file.read_text(encoding="utf-8") if file else ""
    profile, problems = parse_profile_text(text, file, os.environ)
    if not problems:  # a valid YAML profile: does this installation know what it names?
        from mastctl.registry import check_profile

        problems = check_profile(profile)
    name = str(file) if file else "built-in defaults"
    if st.out.json_mode:
        st.out.data({"profile": name, "valid": not problems, "errors": problems})
    elif problems:
        for problem in problems:
            typer.echo(f"{name}: {problem}", err=True)
    else:
        st.out.info(f"{name}: valid")
    if problems:
        raise typer.Exit(2)
