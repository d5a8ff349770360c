"""Pipeline steps: one module per step, each a small program with `make_parser()` and `main(argv) -> int`."""
