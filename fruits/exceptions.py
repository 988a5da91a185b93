"""The one exception type a user sees: the CLI prints its message on one line and exits non-zero."""


class FruitsError(Exception):
    """A problem the user can fix (bad flag, missing path, mismatched model). Never a bug."""

    exit_code = 1


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, for a one-line error."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
