"""Streaming job: featurize and project each new upload once into the lake's Delta tables."""
