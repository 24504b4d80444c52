"""`shareblock-target-agent`: run target requests from stdin on this node.

Used over SSH by RemoteTarget: one JSON request per line on stdin, one JSON
reply per line on stdout, until stdin ends. One agent serves a controller's
whole session, so a Python start (seconds on a small node) is paid once, not
per call. Only the operations listed here can be called; arguments are
validated by the target backends exactly as for local callers.

The agent keeps the node's desired state (`--state-dir`, default
$SHAREBLOCK_NODE_DIR or /var/lib/shareblock/node): what `shareblock-restore`
replays at this node's boot, with no controller.
"""
import argparse
import json
import logging
import sys

from shareblock.targets import desired, names
from shareblock.targets.base import Credentials, Desired, Portal, TargetError
from shareblock.targets.factory import local_target
from shareblock.targets.remote import encode

OPS = {
    "export": lambda t, a: t.export(a["volume_id"], a["device"], a.get("backing"),
                                    hosts=set(a["hosts"]) if isinstance(a.get("hosts"), list)
                                    else None,
                                    shared_reservations=a.get("shared_reservations") is True),
    "unexport": lambda t, a: t.unexport(a["volume_id"]),
    "admit": lambda t, a: t.admit(a["volume_id"], a["host"], a["mode"],
                                  Credentials.from_dict(a.get("credentials"))),
    "set_mode": lambda t, a: t.set_mode(a["volume_id"], a["host"], a["mode"]),
    "revoke": lambda t, a: t.revoke(a["volume_id"], a["host"]),
    "connection": lambda t, a: t.connection(a["volume_id"], a["host"]),
    "actual": lambda t, a: t.actual(a.get("volume_id"), a.get("hosts_only") is True),
    "restore": lambda t, a: t.restore([Desired.from_dict(d) for d in a["desired"]]),
    "apply": lambda t, a: t.apply([Desired.from_dict(d) for d in a["desired"]]),
    "desired": lambda t, a: {v: d.to_dict(secrets=True)
                             for v, d in t.desired(a.get("volume_id")).items()},
    "probe": lambda t, a: t.probe(a["device"]),
    "reservations": lambda t, a: t.reservations(a["volume_id"]),
    "shares_reservations": lambda t, a: t.shares_reservations(),
    "last_restore": lambda t, a: t.last_restore(),
}


def handle(request: dict, targets: dict | None = None, state_dir: str | None = None) -> dict:
    """One request; `targets` keeps each (protocol, prefix, portals) target of a
    session, with its caches, for the next request."""
    try:
        op = request.get("op")
        if op not in OPS:
            raise names.InvalidName(f"unknown operation {op!r}")
        args = request.get("args") or {}
        if not isinstance(args, dict):  # the operations read their arguments by name
            raise names.InvalidName("request args must be an object")
        portals = [Portal(p["address"], p["port"]) for p in request["portals"]]
        port_ids = request.get("port_ids")
        key = (request["protocol"], request.get("prefix"), tuple(portals),
               tuple(port_ids) if isinstance(port_ids, list) else port_ids)
        targets = {} if targets is None else targets
        if key not in targets:
            targets[key] = local_target(request["protocol"], portals, request.get("prefix"),
                                        state_dir or desired.default_root(), port_ids)
        return {"ok": True, "result": encode(OPS[op](targets[key], args))}
    except (names.InvalidName, TargetError, KeyError, TypeError, ValueError, OSError) as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


def answer(line: str, targets: dict, state_dir: str | None = None) -> dict:
    try:
        request = json.loads(line)
    except ValueError as e:
        return {"ok": False, "error": "InvalidName", "message": f"bad request: {e}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "InvalidName", "message": "request must be an object"}
    return handle(request, targets, state_dir)


def main(argv=None) -> int:
    """Exit 0 when every request was answered ok, 1 when any was refused."""
    parser = argparse.ArgumentParser(prog="shareblock-target-agent", description=__doc__
                                     .split("\n")[0])
    parser.add_argument("--state-dir", default=None,
                        help="this node's desired state (default $SHAREBLOCK_NODE_DIR or "
                             f"{desired.DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    targets, ok = {}, True
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(line, targets, args.state_dir)
        ok = ok and reply["ok"]
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()  # the controller waits for this line
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
