"""Pipeline steps: one module per step, each a small program with `make_parser()` and `main(argv) -> int`.

`kairo-step NAME` (kairo.step) imports the module by name — no registry to keep. Steps do not import each
other; what they share with the templates that run them is `kairo.contract` (docs/steps.md).
"""
