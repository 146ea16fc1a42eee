"""`python -m localsystem` (what `make run` runs): start and supervise the whole local system."""

from __future__ import annotations

import argparse
import logging
import sys

from localsystem import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localsystem", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs more of the launcher")
    run.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    return run.run(args)


if __name__ == "__main__":
    sys.exit(main())
