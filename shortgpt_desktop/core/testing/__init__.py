"""Random models built offline, for the self-test, the tests and the benchmarks (never for users' jobs)."""
