"""`python -m cli ...` is `fruits ...`."""

from cli.main import entry

entry()
