"""The one exception type a user sees: the CLI prints its message on one line and exits non-zero."""


class FruitsError(Exception):
    """A problem the user can fix (bad flag, missing path, mismatched model). Never a bug."""

    exit_code = 1
