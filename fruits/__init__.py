"""Fruits! image pipeline: the core shared by the fit job, the streaming job and the AWS tooling."""

__version__ = "0.1.0"
