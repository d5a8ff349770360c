"""The `kairo` CLI's subcommands: one module each, with `add_parser(subparsers)` and `run(args) -> int`.

`kairo.cli` finds them here; `_common` holds what several share (reading the workspace and cluster config),
`_kube` the Kubernetes arguments. The top layer: nothing imports a command but the CLI.
"""
