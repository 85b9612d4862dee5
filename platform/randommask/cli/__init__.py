"""The ``randommask`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from randommask.cli import bench, inference, training
from randommask.errors import UserError

COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="randommask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (training, inference, bench):  # the order of `randommask --help`
        COMMANDS.update(module.register(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"randommask: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the training's own failure, already one line
        if type(e).__name__ != "TrainingFailed":
            raise
        print(f"randommask: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("randommask: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
