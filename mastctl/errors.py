"""The one small error hierarchy of mastctl.

Every failure a user can cause is one of these; the CLI turns them into a
single line on stderr and the exit code below (see ``mastctl.cli.main``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_BACKEND = 4


class MastctlError(Exception):
    """Base class: an expected failure with a one-line message."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = list(details or [])  # every problem, for commands that list them all


class UsageError(MastctlError):
    """Wrong command line, or a capability that this version does not have."""

    exit_code = EXIT_USAGE


class ConfigError(MastctlError):
    """The profile (YAML, environment overrides) is invalid."""

    exit_code = EXIT_USAGE


class InputError(MastctlError):
    """An input file is missing, empty, corrupt, unsupported or too large."""

    exit_code = EXIT_INPUT


class BackendError(MastctlError):
    """A backend is unavailable (missing dependency, missing weights) or failed."""

    exit_code = EXIT_BACKEND
