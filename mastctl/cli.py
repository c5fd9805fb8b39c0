"""The ``mastctl`` command: the root composes the command groups; :func:`main`
is the one place where errors become a line on stderr and an exit code.

Exit codes: 0 ok, 1 unexpected, 2 usage or profile, 3 input data,
4 backend unavailable or failed. ``MASTCTL_DEBUG=1`` adds tracebacks.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mastctl import __version__
from mastctl.errors import EXIT_UNEXPECTED, EXIT_USAGE, MastctlError
from mastctl.output import Output

if TYPE_CHECKING:
    from mastctl.profile import LoadedProfile

HELP = """Find mast cells in H&E histology images.

[bold]Examples[/bold]

  mastctl detect slide.png -o cells.geojson       [dim]# QuPath-ready points[/dim]
  mastctl detect tiles/ -o out/ --format csv       [dim]# one CSV per image[/dim]
  mastctl --json backends list                     [dim]# what is installed[/dim]
  mastctl config init && mastctl config validate   [dim]# start a profile[/dim]

Global options may also follow the command (mastctl detect x.png --json).
"""


@dataclass
class AppState:
    """What the root options decided, handed to every command via ``ctx.obj``."""

    profile_path: Path | None = None
    out: Output = field(default_factory=Output)
    _loaded: LoadedProfile | None = None

    @property
    def loaded(self) -> LoadedProfile:
        if self._loaded is None:
            from mastctl.profile import load_profile

            self._loaded = load_profile(self.profile_path)
            self.out.detail(f"profile: {self._loaded.source}" + (f" ({self._loaded.path})" if self._loaded.path else ""))
        return self._loaded


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def _flags_without_metavar() -> None:
    """Typer labels every option with its type; a flag (--json, --force) takes no value, so it gets none."""
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "_mastctl", False):
        return
    original = TyperOption.display_type_rich

    def display(self, ctx):
        return None if self.is_flag else original(self, ctx)

    display._mastctl = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display  # type: ignore[method-assign]


_flags_without_metavar()

app = typer.Typer(
    name="mastctl",
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def reflow(text: str | None) -> str | None:
    """A help text with each prose paragraph on one line, for rich to wrap at the terminal's width.

    Typer's "rich" markup keeps a docstring's line breaks, so text broken for 100 columns came out ragged in 80.
    A paragraph with an indented line, or one that starts with "Example", is an example block and is kept as it is.
    """
    if not text:
        return text
    paragraphs = text.split("\n\n")
    for i, para in enumerate(paragraphs):
        lines = para.split("\n")
        if not para.startswith(("Example", "\b")) and not any(ln[:1].isspace() for ln in lines):
            paragraphs[i] = " ".join(ln.strip() for ln in lines)
    return "\n\n".join(paragraphs)


def _reflow_tree(command) -> None:
    command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        _reflow_tree(sub)


def versions() -> dict[str, str | None]:
    """mastctl's version and those of the libraries its backends use (None: not installed), from package
    metadata alone: nothing is imported."""
    import re
    from importlib import metadata

    out: dict[str, str | None] = {"mastctl": __version__}
    try:
        requirements = metadata.requires("mastctl") or []
    except metadata.PackageNotFoundError:
        requirements = []
    names = sorted({re.split(r"[\s;<>=!\[~(]", r, maxsplit=1)[0].lower() for r in requirements} - {"mastctl"})
    for name in ["torch", *names]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        found = versions()
        if "--json" in _ARGS:
            typer.echo(__import__("json").dumps(found, indent=2))
        else:
            typer.echo(f"mastctl {__version__}")
            for name, version in found.items():
                if name != "mastctl":
                    typer.echo(f"  {name:<22} {version or '-'}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", "-p", help="Profile YAML (else $MASTCTL_PROFILE, else ./mastctl.yaml, else defaults).", show_default=False),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout; messages stay on stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the versions of mastctl and of the libraries its backends use (with --json: as JSON), and exit.")] = False,
) -> None:
    ctx.obj = AppState(profile_path=profile, out=Output(json_mode=json_output, quiet=quiet, verbose=verbose))


def _register_commands() -> None:
    from mastctl.commands import backends, compare, config, cube, detect, finetune, ihc, kb, schema, synth

    app.command("detect", help=detect.HELP, no_args_is_help=True)(detect.detect)
    app.command("synth", help=synth.HELP, no_args_is_help=True)(synth.synth)
    app.command("compare", help=compare.HELP, no_args_is_help=True)(compare.compare)
    app.command("schema", help=schema.HELP, no_args_is_help=True)(schema.schema)
    app.add_typer(ihc.app, name="ihc")
    app.add_typer(kb.app, name="kb")
    app.add_typer(cube.app, name="cube")
    app.add_typer(finetune.app, name="finetune")
    app.add_typer(config.app, name="config")
    app.add_typer(backends.app, name="backends")


_register_commands()

# --------------------------------------------------------------------------- entry point

_GLOBAL_FLAGS = {"--json", "--quiet", "-q", "--verbose", "-v"}
_GLOBAL_VALUED = {"--profile", "-p"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options written after the command to the front (before ``--`` only)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif arg.startswith("--profile="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


_ARGS: list[str] = []  # this run's command line (after hoisting), for eager options


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    from mastctl import interrupts

    previous = interrupts.install()  # typer turns Ctrl-C into a silent 130; we say so (and SIGTERM, 143)
    try:
        return _run(argv)
    finally:
        interrupts.restore(previous)  # also removes the temporary files of outputs never finished


def _run(argv: list[str] | None) -> int:
    from mastctl import interrupts
    from mastctl.errors import redact_logs

    redact_logs()
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    _ARGS[:] = args
    debug = os.environ.get("MASTCTL_DEBUG", "") not in ("", "0", "false", "no")
    try:
        command = typer.main.get_command(app)
        _reflow_tree(command)
        result = command.main(args=args, prog_name="mastctl", standalone_mode=False)
        if interrupts.interrupted():
            return _stopped()
        return result if isinstance(result, int) else 0
    except MastctlError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        if interrupts.interrupted():
            return _stopped()
        return exc.exit_code
    except typer.Abort:
        if interrupts.interrupted():
            return _stopped()
        _print_error("aborted")
        return 130
    except KeyboardInterrupt:
        return _stopped()
    except typer.TyperException as exc:  # click's usage errors: bad option, missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already shown; no args is still a usage error
            return EXIT_USAGE
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _print_error(f"{message}{hint}")
        return getattr(exc, "exit_code", EXIT_USAGE)
    except BrokenPipeError:
        # `mastctl ... | head`: the reader left; not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _print_error(f"unexpected error: {type(exc).__name__}: {first} (set MASTCTL_DEBUG=1 for a traceback)")
        return EXIT_UNEXPECTED


def _stopped() -> int:
    """Ctrl-C or SIGTERM ended the run: say which, and exit 128 + its number."""
    from mastctl import interrupts

    word, code = interrupts.stopped_by()
    _print_error(word)
    return code


def _print_error(message: str) -> None:
    from mastctl.errors import redact

    sys.stderr.write(f"mastctl: error: {redact(message)}\n")
    sys.stderr.flush()


def run() -> None:  # kept for old installs; the console script is mastctl.entry:run
    raise SystemExit(main())
