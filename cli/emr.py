"""Plan, create, feed, watch and terminate the EMR cluster that runs the Fruits! jobs (see docs/emr.md)."""

from infra.emr import configure, run  # noqa: F401  (moved here by the infra split)
