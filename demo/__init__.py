"""The demos (`make demo`, `make demo-aws`) and the emulated AWS world: development tooling, not in the wheel."""
