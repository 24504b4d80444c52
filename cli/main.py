"""`shareblock`: the command line (grows with the control plane)."""
import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("shareblock")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shareblock",
        description="One block volume attached to many hosts at once, safely "
                    "(LIO iSCSI and nvmet NVMe/TCP multi-attach).")
    parser.add_argument("--version", action="version",
                        version=f"shareblock {package_version()}")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
