"""The one exception type for user mistakes: the CLI prints it as one line, no traceback."""


class GnPluginError(Exception):
    """A user-facing error: bad config, unknown component, broken plugin, missing file."""
