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


# --------------------------------------------------------------------------- other libraries' exceptions

def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), shortened."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def from_library(exc: BaseException, what: str, kind: type[MastctlError] | None = None) -> MastctlError:
    """Any library's exception about ``what`` (a file, a store) as one of ours, with one line.

    Memory exhaustion and permission/space problems say so; everything else a library raises while
    reading data we were given (PIL, LanceDB, Chroma, safetensors, JSON, YAML...) is damaged or
    unreadable input. ``kind`` forces the class (e.g. BackendError for a service).
    """
    import errno

    if isinstance(exc, MastctlError):
        return exc
    if isinstance(exc, MemoryError):
        return InputError(f"{what}: not enough memory to read it")
    if isinstance(exc, PermissionError):
        return InputError(f"{what}: permission denied")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InputError(f"{what}: no space left on the device")
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return InputError(f"{what}: {exc.strerror or first_line(exc)}")
    return (kind or InputError)(f"{what}: damaged or unreadable ({first_line(exc)})")


class guard:
    """``with guard("the knowledge base at X"):`` turns any foreign exception into one of ours."""

    def __init__(self, what: str, kind: type[MastctlError] | None = None) -> None:
        self.what, self.kind = what, kind

    def __enter__(self) -> guard:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, (MastctlError, KeyboardInterrupt, SystemExit, GeneratorExit)):
            return False
        if not isinstance(exc, Exception):
            return False
        raise from_library(exc, self.what, self.kind) from exc


# --------------------------------------------------------------------------- secrets

_SECRETS: set[str] = set()
_KEY_PATTERNS = None


def register_secret(value: str | None) -> None:
    """A credential this process holds (an API key): it is blanked out of everything mastctl prints."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` without any registered secret or anything shaped like an API key or a bearer token."""
    global _KEY_PATTERNS
    if not isinstance(text, str) or not text:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    if _KEY_PATTERNS is None:
        import re

        _KEY_PATTERNS = [
            re.compile(r"AIza[0-9A-Za-z_\-]{30,}"),  # Google API keys
            re.compile(r"\bpcsk_[0-9A-Za-z_\-]{20,}"),  # Pinecone keys
            re.compile(r"\bsk-[0-9A-Za-z_\-]{20,}"),  # OpenAI-style keys
            re.compile(r"(?i)((?:api[_-]?key|key|token|secret|password)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;]{8,}"),
            re.compile(r"(?i)(bearer\s+)[0-9A-Za-z._\-]{8,}"),
        ]
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


def redact_data(value):
    """:func:`redact` through a JSON-like structure (dicts, lists, strings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value


def redact_logs() -> None:
    """Blank secrets out of library log lines too (the handlers Python prints warnings with)."""
    import logging

    class _Redact(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg = redact(record.getMessage())
            record.args = ()
            return True

    for handler in [logging.lastResort, *logging.getLogger().handlers]:
        if handler is not None and not any(isinstance(f, _Redact) for f in handler.filters):
            handler.addFilter(_Redact())
