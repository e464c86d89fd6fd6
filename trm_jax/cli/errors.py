"""The command line's own error: arguments that do not fit together (exit status 2)."""


class UsageError(ValueError):
    """Arguments that do not fit together."""
