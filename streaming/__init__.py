"""Streaming job: featurize and project new uploads into partitioned parquet."""
