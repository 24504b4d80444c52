"""`shareblock-target-agent`: run one target request from stdin on this node.

Used over SSH by RemoteTarget. Reads one JSON request, writes one JSON reply.
Only the operations listed here can be called; arguments are validated by the
target backends exactly as for local callers.
"""
import json
import logging
import sys

from shareblock.targets import names
from shareblock.targets.base import Credentials, Desired, Portal, TargetError
from shareblock.targets.factory import local_target
from shareblock.targets.remote import encode

OPS = {
    "export": lambda t, a: t.export(a["volume_id"], a["device"]),
    "unexport": lambda t, a: t.unexport(a["volume_id"]),
    "admit": lambda t, a: t.admit(a["volume_id"], a["host"], a["mode"],
                                  Credentials.from_dict(a.get("credentials"))),
    "set_mode": lambda t, a: t.set_mode(a["volume_id"], a["host"], a["mode"]),
    "revoke": lambda t, a: t.revoke(a["volume_id"], a["host"]),
    "connection": lambda t, a: t.connection(a["volume_id"], a["host"]),
    "actual": lambda t, a: t.actual(a.get("volume_id")),
    "restore": lambda t, a: t.restore([Desired.from_dict(d) for d in a["desired"]]),
    "probe": lambda t, a: t.probe(a["device"]),
}


def handle(request: dict) -> dict:
    try:
        op = request.get("op")
        if op not in OPS:
            raise names.InvalidName(f"unknown operation {op!r}")
        args = request.get("args") or {}
        if not isinstance(args, dict):  # the operations read their arguments by name
            raise names.InvalidName("request args must be an object")
        portals = [Portal(p["address"], p["port"]) for p in request["portals"]]
        target = local_target(request["protocol"], portals, request.get("prefix"))
        return {"ok": True, "result": encode(OPS[op](target, args))}
    except (names.InvalidName, TargetError, KeyError, TypeError, ValueError) as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        reply = {"ok": False, "error": "InvalidName", "message": f"bad request: {e}"}
    else:
        reply = handle(request) if isinstance(request, dict) else {
            "ok": False, "error": "InvalidName", "message": "request must be an object"}
    json.dump(reply, sys.stdout)
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
