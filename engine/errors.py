"""Errors the engine raises on purpose. Pages and the CLI catch these (and only these) and show the message."""

from __future__ import annotations


class GroveError(Exception):
    """Base of every error Grove raises on purpose; ``str(e)`` is a message for the user."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class SpecError(GroveError):
    """The run spec is invalid. ``problems`` holds ``(field path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "") -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        lines = [f"{where}{path or '(spec)'}: {msg}" for path, msg in problems]
        super().__init__("Invalid run spec\n" + "\n".join("  " + ln for ln in lines))


class DataError(GroveError):
    """A dataset cannot be used. The message names the file, and the line or column when there is one."""


class ModelError(GroveError):
    """The input model cannot be used (missing folder, no config.json, ...)."""


class RunNotFound(GroveError):
    pass


class RunStateError(GroveError):
    """An action that does not fit the run's state (cancel a finished run, retry a running one, ...)."""


class ResourceError(GroveError):
    """A run asks for resources this machine does not have (more GPUs than exist, ...)."""
