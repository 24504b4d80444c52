"""`shareblock-units`: install the shipped systemd units, with this installation's paths.

The units in this folder are templates: `@BINDIR@` becomes the folder holding
this installation's commands (a virtualenv's bin/, or /usr/local/bin), so the
units start the commands that are really there, and `systemd-analyze verify`
finds them. `@CONFIG@`, `@NODE_DIR@` and `@LISTEN@` come from the options.
"""
import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
UNITS = ("shareblock-restore.service", "shareblock-guard.service",
         "shareblock-exporter.service")
DEFAULTS = {"CONFIG": "/etc/shareblock/shareblock.conf", "NODE_DIR": "/var/lib/shareblock/node",
            "LISTEN": "127.0.0.1:9740"}


def bindir() -> str:
    """Where this installation's console scripts are (beside this Python)."""
    return sysconfig.get_path("scripts")


def render(name: str, values: dict) -> str:
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r}: {', '.join(UNITS)}")
    text = (HERE / name).read_text()
    for key, value in {"BINDIR": bindir(), **DEFAULTS, **values}.items():
        if any(c.isspace() or c in "\"'\\%$" for c in str(value)):
            raise ValueError(f"{key.lower()} {value!r}: no spaces, quotes, '\\', '%' or '$'")
        text = text.replace(f"@{key}@", str(value))
    return text


def install(folder: Path, values: dict, names=UNITS) -> list[Path]:
    """Write the units (0644) into folder; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render(name, values))
        os.chmod(tmp, 0o644)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shareblock-units", description=__doc__
                                     .split("\n")[0].split("`: ")[-1])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, help_ in (("install", "write the units and reload systemd"),
                          ("show", "print the units as they would be installed")):
        p = sub.add_parser(action, help=help_)
        p.add_argument("units", nargs="*", metavar="UNIT",
                       help=f"default: all ({', '.join(UNITS)})")
        p.add_argument("--config", default=DEFAULTS["CONFIG"], help="shareblock.conf for the "
                       "guard and the exporter (default %(default)s)")
        p.add_argument("--node-dir", default=DEFAULTS["NODE_DIR"],
                       help="the storage node's desired state (default %(default)s)")
        p.add_argument("--listen", default=DEFAULTS["LISTEN"],
                       help="the exporter's address (default %(default)s)")
    p_install = sub.choices["install"]
    p_install.add_argument("--unit-dir", default="/etc/systemd/system", type=Path)
    p_install.add_argument("--enable", action="store_true",
                           help="also enable and start them (systemctl enable --now)")
    args = parser.parse_args(argv)
    names = tuple(args.units) or UNITS
    values = {"CONFIG": args.config, "NODE_DIR": args.node_dir, "LISTEN": args.listen}
    try:
        if args.action == "show":
            for name in names:
                print(f"# {name}\n{render(name, values)}")
            return 0
        paths = install(args.unit_dir, values, names)
    except (ValueError, OSError) as e:
        print(f"shareblock-units: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"installed {path}")
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        if args.enable:
            return subprocess.run(["systemctl", "enable", "--now", *names]).returncode
    elif args.enable:
        print("shareblock-units: error: systemd is not running here: nothing enabled",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
