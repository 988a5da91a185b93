"""Which EMR releases the launchers accept."""

from __future__ import annotations

import re

from infra.defaults import DEFAULT_RELEASE

__all__ = ["DEFAULT_RELEASE", "RELEASE_PATTERN"]

# Any emr-7.x.y is accepted.
RELEASE_PATTERN = re.compile(r"^emr-7\.\d+\.\d+$")
