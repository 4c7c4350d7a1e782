"""The `daptq` command: one entry point, one subcommand module per job (see `commands/`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Before torch loads OpenMP: spinning worker threads ran 3x slower on small, shared CPUs, but
# a purely passive wait puts threads to sleep between the hundreds of small parallel regions of
# an action chunk (+37 % at 0.42 G parameters); a short spin keeps most of the speed and still
# yields the CPU (docs/performance.md). Values set by the user win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# torchao's CPU wheel logs that its CUDA-only extensions cannot load, and torch logs enum
# registrations when torchao imports: noise for a CLI user.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

from daptq_ros.errors import DaptqError  # noqa: E402

# Subcommands and their modules under daptq_ros.commands, in the order `daptq --help` lists them.
COMMANDS = {
    "demo": "demo",
    "quant-demo": "quant_demo",
    "bench": "bench",
    "bags": "bags",
    "drift": "drift",
    "collect": "collect",
    "train": "train",
    "eval": "eval",
    "quantize": "quantize",
    "report": "report",
    "import": "import_model",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered, or only `command`'s.

    Registering one subcommand imports only its module: `daptq drift` does not load torch.
    """
    parser = argparse.ArgumentParser(
        prog="daptq",
        description="Drift-aware post-training quantization (DA-PTQ) of VLA policies for "
        "ROS 2 arms: quantize, evaluate, benchmark and analyse drift.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if command in COMMANDS and name != command:
            continue
        module = importlib.import_module(f"daptq_ros.commands.{module_name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit with status 2, Ctrl-C
    exits with 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DaptqError as error:
        print(f"daptq {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Leaves through every `finally` on the way out (Ray workers and local Ray stopped).
        print(f"daptq {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def run_quietly(argv: Sequence[str]) -> int:
    """Run a `daptq` subcommand from another one, its printed output on stderr (the calling
    command's stdout stays its own, e.g. for --json)."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return main(argv)


def run_silently(argv: Sequence[str]) -> int:
    """Run a `daptq` subcommand from another one, its printed output dropped (its errors and
    progress bars still reach stderr)."""
    import contextlib
    import os

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return main(argv)


if __name__ == "__main__":
    sys.exit(main())
