"""Starts and supervises one experiment: `python master.py CONFIG GPU [--resume]`.

The master process only wires and supervises (see runtime.py for the process roles).
`--print-config` prints the fully resolved config as JSON and exits without starting anything.
"""

from __future__ import annotations

import argparse
import json
import sys

import config as config_lib


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="master.py",
        description="Run one STEVE/MVE/DDPG experiment: learners, interactors and evaluators.",
    )
    parser.add_argument("config", help="experiment config file, e.g. "
                        "config/experiments/goodruns/hopper/steve3.json")
    parser.add_argument("gpu", type=int, help="GPU id for the policy learner; the world model "
                        "uses GPU+1 (any number works on a machine without a GPU)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_lib.load_config(args.config)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        json.dump(config, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print("error: the runtime is not built yet; only --print-config works.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
