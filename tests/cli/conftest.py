"""Fixtures for the command-line tests: `no_network` (tests/aws_support.py) for every test here."""

from aws_support import no_network  # noqa: F401  (re-exported as a fixture)
