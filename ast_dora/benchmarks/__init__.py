"""Benchmarks run by `python -m ast_dora.bench <name>`: one module per benchmark, each exposing
`add_arguments(parser)` and `run(args) -> dict`."""
