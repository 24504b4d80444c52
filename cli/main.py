"""`shareblock`: cinderclient's commands against the embedded control plane.

Readable tables by default, `--json` for scripts (Cinder's API field names),
one-line errors and non-zero exit codes on failure. `--control
ssh://user@node` runs the same command on a storage node over SSH.
"""
import argparse
import contextlib
import datetime
import json
import logging
import re
import sys
from importlib.metadata import PackageNotFoundError, version

from shareblock.cli import output
from shareblock.terminal.progress import Progress, ProgressHandler

EXIT = {"InvalidInput": 2, "InvalidName": 2, "InvalidArgs": 2, "NotFound": 3, "Conflict": 4,
        "PolicyNotAuthorized": 5}
VOLUME_COLUMNS = ["id", "name", "status", "size", "volume_type", "multiattach",
                  "attachments"]
SNAPSHOT_COLUMNS = ["id", "volume_id", "status", "name", "size"]
ATTACHMENT_COLUMNS = ["id", "volume_id", "status", "attach_mode", "instance", "reason"]
EVENT_COLUMNS = ["at", "volume_id", "host", "filesystem", "action", "reason"]
FENCE_COLUMNS = ["node", "status", "fenced", "hosts", "volumes", "fenced_at"]


def package_version() -> str:
    try:
        return version("shareblock")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--cont` must not reach a storage node as `--control`
    # (cli/remote.py strips the local-only options by their full names).
    parser = argparse.ArgumentParser(
        prog="shareblock", allow_abbrev=False,
        description="One block volume attached to many hosts at once, safely "
                    "(LIO iSCSI and nvmet NVMe/TCP multi-attach).")
    parser.add_argument("--version", action="version",
                        version=f"shareblock {package_version()}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # cinderclient's habit: global options also after the command (`show V --json`);
    # there they override only when given
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS)
    add_global_options(common)

    def cmd(name, help_):
        return sub.add_parser(name, help=help_, description=help_, parents=[common],
                              allow_abbrev=False)

    p = cmd("type-create", "create a volume type")
    p.add_argument("name")
    p = cmd("type-key", "set or unset extra specs: type-key NAME set multiattach='<is> True'")
    p.add_argument("vtype")
    p.add_argument("action", choices=["set", "unset"])
    p.add_argument("specs", nargs="+", metavar="key[=value]")
    cmd("type-list", "list volume types")
    cmd("extra-specs-list", "list volume types with their extra specs")
    p = cmd("type-delete", "delete a volume type")
    p.add_argument("vtype")
    p = cmd("create", "create a volume (from a snapshot or a volume: the source's type "
                      "and size unless given)")
    p.add_argument("size", type=int, metavar="SIZE_GB", nargs="?")
    p.add_argument("--volume-type", "--volume_type", dest="volume_type")
    p.add_argument("--name")
    p.add_argument("--snapshot-id", "--snapshot_id", dest="snapshot_id",
                   help="make the volume from this snapshot")
    p.add_argument("--source-volid", "--source_volid", dest="source_volid",
                   help="make the volume a copy of this volume")
    p = cmd("show", "show a volume")
    p.add_argument("volume")
    cmd("list", "list volumes")
    p = cmd("delete", "delete volumes")
    p.add_argument("volumes", nargs="+")
    p = cmd("extend", "grow a volume")
    p.add_argument("volume")
    p.add_argument("new_size", type=int)
    p = cmd("retype", "change a volume's type")
    p.add_argument("volume")
    p.add_argument("volume_type")
    p.add_argument("--migration-policy", choices=["never"], default="never",
                   help="only never: shareblock does not migrate")
    p = cmd("snapshot-create", "snapshot a volume (available or in-use: nobody is detached)")
    p.add_argument("volume")
    p.add_argument("--name")
    p.add_argument("--force", nargs="?", const="True", choices=["True", "False"],
                   help="cinderclient's flag for in-use volumes: accepted, not needed")
    p = cmd("snapshot-list", "list snapshots")
    p.add_argument("--volume-id", "--volume_id", dest="volume")
    p = cmd("snapshot-show", "show a snapshot")
    p.add_argument("snapshot")
    p = cmd("snapshot-delete", "delete snapshots")
    p.add_argument("snapshots", nargs="+")
    p = cmd("revert-to-snapshot", "revert a volume to its latest snapshot (volume available)")
    p.add_argument("snapshot")
    p = cmd("attachment-create", "attach a volume (reserve; with a connector, connect)")
    p.add_argument("volume")
    p.add_argument("server_id", nargs="?", metavar="SERVER_ID",
                   help="the server (instance) the volume is attached to")
    add_connector_args(p)
    p.add_argument("--mode", choices=["rw", "ro"], default="rw")
    p.add_argument("--instance", help="same as SERVER_ID")
    p = cmd("attachment-update", "give a reserved attachment its host's connector")
    p.add_argument("attachment")
    add_connector_args(p)
    p = cmd("attachment-complete", "mark an attachment attached")
    p.add_argument("attachment")
    p = cmd("attachment-show", "show an attachment")
    p.add_argument("attachment")
    p = cmd("attachment-list", "list attachments")
    p.add_argument("--volume-id", dest="volume")
    p = cmd("attachment-delete", "detach (the other hosts keep their access)")
    p.add_argument("attachments", nargs="+")
    cmd("reconcile", "bring state and the targets' configfs back in line")
    p = cmd("guard", "probe shared volumes; demote all writers but one on single-host "
                     "filesystems")
    p.add_argument("--loop", action="store_true", help="keep checking every --interval s")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between passes (default: guard_interval, 30)")
    p.add_argument("--passes", type=int, default=None, help="with --loop: stop after N")
    p = cmd("connect", "on a host: attach VOLUME here (os-brick), print the device")
    p.add_argument("volume")
    p.add_argument("--mode", choices=["rw", "ro"], default="rw")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the device")
    p = cmd("disconnect", "on a host: flush, disconnect and delete this host's attachment")
    p.add_argument("volume")
    cmd("hosts-status", "on a host: what this host has attached")
    p = cmd("reservations", "a volume's persistent reservation as the target holds it: "
                            "holder, type, registered initiators")
    p.add_argument("volume")
    p = cmd("fence", "cut a node's hosts off at the target (every volume, or --volume ones) "
                     "until unfence; its attachments stay")
    p.add_argument("node", help="the node, as its connectors' `host` names it")
    p.add_argument("--volume", action="append", dest="volumes", metavar="VOLUME",
                   help="fence from this volume only (repeat for more)")
    p = cmd("unfence", "readmit a fenced node's hosts (their modes and credentials)")
    p.add_argument("node")
    p = cmd("fence-status", "is the node cut off at the target (`off`) or not (`on`)")
    p.add_argument("node")
    cmd("fence-list", "the nodes the control plane knows, with their fence status")
    p = cmd("get-pools", "the backends' pools (with --detail, their capabilities), as "
                         "cinder get-pools")
    p.add_argument("--detail", action="store_true", help="each pool's capabilities")
    p = cmd("events", "the guard's decisions, fences, unfences and reconcile runs")
    p.add_argument("--volume-id", dest="volume")
    p.add_argument("--since", type=since_arg, metavar="WHEN",
                   help="from WHEN on: a local date and time (2026-12-06 or "
                        "'2026-12-06 14:00'), or an age (30m, 2h, 1d)")
    return parser


def add_global_options(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--config", help="shareblock.conf (default $SHAREBLOCK_CONFIG or "
                                         "/etc/shareblock/shareblock.conf)")
    parser.add_argument("--control", metavar="ssh://user@node | cinder",
                        help="run the command on a storage node's control plane over SSH; "
                        "for connect/disconnect, `cinder` uses Cinder's attachment API "
                        "(OS_* environment, as the cinder client)")
    parser.add_argument("--known-hosts", help="known_hosts for --control")
    parser.add_argument("--ssh-key", help="private key for --control")
    parser.add_argument("--show-secrets", action="store_true",
                        help="print CHAP / DH-HMAC-CHAP secrets in connection info")
    parser.add_argument("--debug", action="store_true", help="log to stderr")


def add_connector_args(p):
    p.add_argument("--connect", choices=["true", "false"], default=None,
                   help="cinderclient's flag: connect now (needs a connector)")
    p.add_argument("--connector", help="connector as JSON (os-brick's get_connector_properties)")
    p.add_argument("--initiator", help="the host's iSCSI initiator IQN")
    p.add_argument("--nqn", help="the host's NVMe host NQN")
    p.add_argument("--host", dest="host_name", help="the host's name")


def connector_from(args) -> dict | None:
    if args.connector:
        try:
            connector = json.loads(args.connector)
        except ValueError as e:
            raise InvalidArgs(f"--connector is not JSON: {e}") from None
        if not isinstance(connector, dict):
            raise InvalidArgs("--connector must be a JSON object")
    elif args.initiator or args.nqn:
        connector = {k: v for k, v in (("initiator", args.initiator), ("nqn", args.nqn),
                                       ("host", args.host_name)) if v}
    else:
        connector = None
    if args.connect == "true" and connector is None:
        raise InvalidArgs("--connect true needs --connector, --initiator or --nqn")
    if args.connect == "false":
        connector = None
    return connector


class InvalidArgs(ValueError):
    pass


def parse_specs(action: str, items: list[str]) -> dict | list:
    if action == "unset":
        return {k: None for k in items}
    specs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgs(f"{item!r}: set takes key=value")
        specs[key] = value
    return specs


def run(args, cp) -> tuple[object, str]:
    """Do the command; return (result, kind) where kind picks the table layout."""
    c = args.command
    if c == "type-create":
        return cp.type_create(args.name), "item"
    if c == "type-key":
        return cp.type_key(args.vtype, args.action, parse_specs(args.action, args.specs)), "item"
    if c in ("type-list", "extra-specs-list"):
        cols = ["id", "name"] + (["extra_specs"] if c == "extra-specs-list" else [])
        return cp.type_list(), cols
    if c == "type-delete":
        cp.type_delete(args.vtype)
        return None, "none"
    if c == "create":
        return cp.create(args.size, args.volume_type, args.name, args.snapshot_id,
                         args.source_volid), "item"
    if c == "snapshot-create":
        return cp.snapshot_create(args.volume, args.name), "item"
    if c == "snapshot-list":
        return cp.snapshot_list(args.volume), SNAPSHOT_COLUMNS
    if c == "snapshot-show":
        return cp.snapshot_show(args.snapshot), "item"
    if c == "snapshot-delete":
        each(args.snapshots, cp.snapshot_delete)
        return None, "none"
    if c == "revert-to-snapshot":
        return cp.revert_to_snapshot(args.snapshot), "item"
    if c == "show":
        return cp.show(args.volume), "item"
    if c == "list":
        return cp.volume_list(), VOLUME_COLUMNS
    if c == "delete":
        each(args.volumes, cp.delete)
        return None, "none"
    if c == "extend":
        return cp.extend(args.volume, args.new_size), "item"
    if c == "retype":
        return cp.retype(args.volume, args.volume_type), "item"
    if c == "attachment-create":
        if args.server_id and args.instance and args.server_id != args.instance:
            raise InvalidArgs("SERVER_ID and --instance name different servers")
        return cp.attachment_create(args.volume, connector_from(args), args.mode,
                                    args.server_id or args.instance), "item"
    if c == "attachment-update":
        connector = connector_from(args)
        if connector is None:
            raise InvalidArgs("attachment-update needs --connector, --initiator or --nqn")
        return cp.attachment_update(args.attachment, connector), "item"
    if c == "attachment-complete":
        return cp.attachment_complete(args.attachment), "item"
    if c == "attachment-show":
        return cp.attachment_show(args.attachment), "item"
    if c == "attachment-list":
        return cp.attachment_list(args.volume), ATTACHMENT_COLUMNS
    if c == "attachment-delete":
        for att in args.attachments:
            cp.attachment_delete(att)
        return None, "none"
    if c == "reconcile":
        with Progress("reconcile: volumes", enabled=False if args.json else None) as shown:
            return cp.reconcile(shown), "item"
    if c == "guard":
        return guard_command(args, cp), EVENT_COLUMNS[1:]
    if c == "fence":
        return cp.fence(args.node, args.volumes), "item"
    if c == "unfence":
        return cp.unfence(args.node), "item"
    if c == "fence-status":
        return cp.fence_status(args.node), "item"
    if c == "fence-list":
        return cp.fence_list(), FENCE_COLUMNS
    if c == "reservations":
        return cp.reservations(args.volume), "reservations"
    if c == "events":
        return cp.events(args.volume, args.since), EVENT_COLUMNS
    if c == "get-pools":
        return cp.get_pools(args.detail), "pools"
    raise InvalidArgs(f"unknown command {c}")


def each(refs: list[str], action) -> None:
    """As cinderclient's delete: every one is tried; a failure does not stop the
    rest, and the first failure's kind (its exit code) names them all."""
    failed = []
    for ref in refs:
        try:
            action(ref)
        except Exception as e:
            failed.append((ref, e))
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        first = failed[0][1]
        raise type(first)("; ".join(f"{ref}: {e}" for ref, e in failed)) from first


AGE_RE = re.compile(r"^(\d+)([smhd])$")


def exit_code(e: Exception) -> int:
    """The exit code of an error's kind, or of the nearest kind it is a case of (a
    fenced node's refusal is a Conflict: 4)."""
    return next((EXIT[k.__name__] for k in type(e).__mro__ if k.__name__ in EXIT), 1)


def since_arg(text: str) -> str:
    """--since: a local time, or an age; the UTC time the event log compares with."""
    now = datetime.datetime.now(datetime.timezone.utc)
    age = AGE_RE.match(text.strip())
    if age:
        seconds = int(age[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age[2]]
        when = now - datetime.timedelta(seconds=seconds)
    else:
        try:
            when = datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a date and time (2026-12-06 14:00) or an age (30m, 2h, 1d)"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()  # a time without a zone is this machine's local time
    return when.astimezone(datetime.timezone.utc).replace(tzinfo=None).isoformat(
        timespec="seconds")


def guard_command(args, cp) -> list[dict]:
    import time
    interval = args.interval if args.interval is not None else cp.conf.guard_interval
    done, passes = [], 0
    while True:
        # a single pass shows its progress on a terminal; the loop (a service) does not
        with Progress("guard: volumes", enabled=False if args.json or args.loop
                      else None) as shown:
            found = cp.guard_pass(shown)
        done += found
        passes += 1
        if args.loop and found and not args.json:
            print(output.table(found, EVENT_COLUMNS[1:]), flush=True)
        if not args.loop or (args.passes is not None and passes >= args.passes):
            return done
        time.sleep(interval)


HOST_COMMANDS = ("connect", "disconnect", "hosts-status")
HOST_COLUMNS = ["volume_id", "name", "device", "mode", "transport", "target", "session",
                "attached_at"]


def host_command(args) -> int:
    """Host-side commands run here; only their control-plane calls may go over SSH."""
    from shareblock.host import attach
    try:
        if args.command == "hosts-status":
            result, kind = attach.status(), HOST_COLUMNS
        else:
            from shareblock.host.control import CinderControl, LocalControl, SshControl
            if args.control == "cinder":
                control = CinderControl()
            elif args.control:
                control = SshControl(args.control, args.known_hosts, args.ssh_key, args.config)
            else:
                control = LocalControl(args.config)
            if args.command == "connect":
                rec = attach.connect(control, args.volume, args.mode, args.timeout)
                result, kind = rec, "item"
                if not args.json:
                    print(rec["device"])
                    return 0
            else:
                result, kind = attach.disconnect(control, args.volume), "item"
    except Exception as e:
        print(f"shareblock: error: {e}", file=sys.stderr)
        if args.debug:
            raise
        return exit_code(e)
    text = render(result, kind, args)
    if text:
        print(text)
    return 0


def render(result, kind, args) -> str:
    result = output.mask(result, args.show_secrets)
    if kind == "none":
        return output.as_json({}) if args.json else ""
    if args.json:
        return output.as_json(result)
    if kind == "item":
        return output.properties(result)
    if kind == "reservations":
        return output.reservation(result)
    if isinstance(kind, list):  # a table for a reader: times in the local zone
        return output.table(output.localized(result), kind)
    if kind == "pools":  # as cinderclient: one property table per pool
        return "\n".join(output.properties({"name": p["name"], **p.get("capabilities", {})})
                         for p in result)
    return output.table(result, kind)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with progress_shown(not args.debug and not getattr(args, "json", False)):
        return dispatch(args, argv)


@contextlib.contextmanager
def progress_shown(show: bool):
    """A long copy (snapshot, clone, revert) draws its progress line on stderr when
    that is a terminal (stdout stays the result); quiet with --json or --debug."""
    if not show:
        yield
        return
    ticks = logging.getLogger("shareblock.progress.ticks")
    shown = ProgressHandler()
    ticks.addHandler(shown)
    try:
        yield
    finally:
        ticks.removeHandler(shown)
        shown.close()


def dispatch(args, argv) -> int:
    if args.command in HOST_COMMANDS:
        return host_command(args)
    if args.control == "cinder":
        print("shareblock: error: --control cinder is for connect and disconnect; use the "
              "cinder client for the rest", file=sys.stderr)
        return 2
    if args.control:
        from shareblock.cli import remote
        return remote.run(args.control, sys.argv[1:] if argv is None else argv,
                          args.known_hosts, args.ssh_key)
    try:
        from shareblock.control import config
        from shareblock.control.api import ControlPlane
        cp = ControlPlane(config.load(args.config))
        result, kind = run(args, cp)
    except Exception as e:  # one line, no traceback: the message says what and why
        print(f"shareblock: error: {e}", file=sys.stderr)
        if args.debug:
            raise
        return exit_code(e)
    text = render(result, kind, args)
    if text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run_captured(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in-process, its output captured: for the demo and tests, which
    would otherwise pay a Python start per command (seconds under emulation)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()
