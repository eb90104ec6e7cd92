"""The one exception type users see: its message is printed as a single line by the CLI."""


class SemfuseError(Exception):
    """A problem with the user's input, files or environment (not a bug in semfuse-rt)."""
