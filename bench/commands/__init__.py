"""Subcommands of the `titok-bench` CLI, one module each: `add_parser(subparsers)` + `run(args) -> int`."""
