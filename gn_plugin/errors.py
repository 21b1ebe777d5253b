"""The exception type for user mistakes (and for runs stopped by a signal): the CLI prints it as one line, no traceback."""


class GnPluginError(Exception):
    """A user-facing error: bad config, unknown component, broken plugin, missing file."""


class Interrupted(GnPluginError):
    """Stopped by SIGINT, SIGTERM or SIGUSR2 after saving what could be saved; the exit status is 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(exc: BaseException) -> str:
    """An exception's message reduced to its first non-empty line (for one-line reports of library errors)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
