"""Subcommands of the `daptq` CLI: each module has `add_parser(subparsers)` and `run(args)`."""
