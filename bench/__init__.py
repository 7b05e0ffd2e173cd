"""Benchmarks and soaks against real processes: `make bench`, `make soak` (not in `make test`)."""
