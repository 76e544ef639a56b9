"""The `raftbox` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    from raftbox.raft import kvcli

    kvcli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "raft-kv":
        return kvcli.run(args)
    if args.command == "version":
        from raftbox import __version__

        print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
