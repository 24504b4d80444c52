"""The demo: the seed's multi-attach scenario on real targets, as an admin sees it.

Every `$ shareblock ...` line is the real CLI, run against a real control plane
(SQLite) whose backends program the lab kernel's LIO and nvmet. Two host
identities connect with open-iscsi / nvme-cli and share the volume.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import uuid

from shareblock.cli import main as cli
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host
from shareblock.lab.initiators import read_back

MB = 1 << 20


class Demo:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="shareblock-demo-")
        self.conf = str(lab_config.write(self.dir))
        self.shown: list[tuple[str, bool]] = []

    def sb(self, *args, show=True, expect=0):
        """Run the real CLI once (in-process: a Python start costs seconds under
        emulation): shown as an admin sees it (tables, secrets masked), or quietly
        with --json for the demo's own use."""
        base = ["--config", self.conf]
        if show:
            print(f"\n$ shareblock {shlex.join(args)}", flush=True)
            rc, out, err = cli.run_captured(base + list(args))
            print((out + err).rstrip(), flush=True)
        else:
            rc, out, err = cli.run_captured(base + ["--json", "--show-secrets", *args])
        if rc != expect:
            raise SystemExit(f"demo: shareblock {args[0]} exit {rc}: {err}")
        return None if show or not out.strip() else json.loads(out)

    def check(self, what: str, ok: bool) -> None:
        print(f"  -> {what}: {'yes' if ok else 'NO'}", flush=True)
        self.shown.append((what, ok))


def scenario(demo: Demo, protocol: str, token: str) -> None:
    label = "iSCSI (LIO)" if protocol == "iscsi" else "NVMe/TCP (nvmet)"
    proto = "iSCSI" if protocol == "iscsi" else "NVMe-oF"
    print(f"\n=== {label} ===", flush=True)
    mtype, plain = f"multiattach-{proto}", f"plain-{proto}"
    demo.sb("type-create", mtype, show=False)
    demo.sb("type-key", mtype, "set", "multiattach=<is> True", f"storage_protocol={proto}")
    demo.sb("type-create", plain, show=False)
    demo.sb("type-key", plain, "set", f"storage_protocol={proto}", show=False)
    demo.sb("create", "--volume-type", mtype, "--name", f"shared-{token}", "1")
    vol = demo.sb("show", f"shared-{token}", show=False)
    demo.check("volume is multiattach (from its type)", vol["multiattach"] is True)
    key = "initiator" if protocol == "iscsi" else "nqn"
    a, b = Host(protocol, f"demo-a-{token}"), Host(protocol, f"demo-b-{token}")
    try:
        atts = []
        for host, name, mode in ((a, "host-a", "rw"), (b, "host-b", "ro")):
            connector = json.dumps({key: host.id, "host": name})
            demo.sb("attachment-create", f"shared-{token}", "--connect", "true",
                    "--connector", connector, "--mode", mode)
            att = demo.sb("attachment-list", "--volume-id", vol["id"], show=False)[-1]
            demo.sb("attachment-complete", att["id"], show=False)
            atts.append(att)
        demo.sb("show", f"shared-{token}")
        dev_a = a.attach(atts[0]["connection_info"])
        dev_b = b.attach(atts[1]["connection_info"])
        print(f"\nhost A ({a.id}) connected: {dev_a}\nhost B ({b.id}) connected: {dev_b}")
        data = os.urandom(MB)
        a.write(data)
        demo.check("host B reads what host A wrote", b.read(MB) == data)
        backing = demo.sb("show", vol["id"], show=False)
        before = read_back(dev_b, MB, 4)
        demo.check("host B (ro) cannot write: the target refuses",
                   b.write_fails_at_target(os.urandom(MB), 4) and read_back(dev_b, MB, 4) == before)
        demo.sb("retype", f"shared-{token}", plain, expect=4)
        demo.check("retype refused while in-use", demo.sb("show", vol["id"], show=False)
                   ["volume_type"] == backing["volume_type"])
        a.disconnect()
        demo.sb("attachment-delete", atts[0]["id"])
        demo.check("host B keeps working after host A detached", b.read(MB) == data)
        b.disconnect()
        demo.sb("attachment-delete", atts[1]["id"], show=False)
        demo.sb("retype", f"shared-{token}", plain)
        demo.sb("delete", f"shared-{token}", show=False)
    finally:
        a.cleanup()
        b.cleanup()


def guard_scenario(demo: Demo, protocol: str, token: str) -> None:
    """The seed's warning, acted on: ext4 on a shared volume, a second writer gets ro."""
    proto = "iSCSI" if protocol == "iscsi" else "NVMe-oF"
    print(f"\n=== the shared-filesystem guard ({proto}) ===", flush=True)
    name = f"ext4-{protocol}-{token}"
    demo.sb("create", "--volume-type", f"multiattach-{proto}", "--name", name, "1")
    vol = demo.sb("show", name, show=False)
    a, b = Host(protocol, f"guard-a-{token}"), Host(protocol, f"guard-b-{token}")
    try:
        att_a = demo.sb("attachment-create", vol["id"], "--connector",
                        json.dumps(a.connector("host-a")), show=False)
        dev_a = a.attach(att_a["connection_info"])
        print(f"\nhost A formats {dev_a} with ext4 (a single-host filesystem) and uses it")
        subprocess.run(["mkfs.ext4", "-q", str(dev_a)], check=True)
        demo.sb("attachment-create", name, "--connect", "true", "--connector",
                json.dumps(b.connector("host-b")))
        att_b = demo.sb("attachment-list", "--volume-id", vol["id"], show=False)[-1]
        demo.check("host B asked for rw and was granted ro by the guard",
                   att_b["attach_mode"] == "ro" and "ext4" in (att_b["reason"] or ""))
        b.attach(att_b["connection_info"])
        demo.check("host B's writes fail at the target",
                   b.write_fails_at_target(os.urandom(MB), 300))
        demo.sb("events", "--volume-id", vol["id"])
        for host, att in ((a, att_a), (b, att_b)):
            host.disconnect()
            demo.sb("attachment-delete", att["id"], show=False)
    finally:
        a.cleanup()
        b.cleanup()


def main() -> int:
    token = uuid.uuid4().hex[:6]
    demo = Demo()
    print(f"kernel {os.uname().release}; configuration {demo.conf}:\n")
    with open(demo.conf) as f:
        print(f.read())
    scenario(demo, "iscsi", token)
    scenario(demo, "nvmet_tcp", token)
    guard_scenario(demo, "iscsi", token)
    guard_scenario(demo, "nvmet_tcp", token)
    print("\n=== what the demo showed ===")
    for what, ok in demo.shown:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if demo.shown and all(ok for _, ok in demo.shown) else 1


if __name__ == "__main__":
    sys.exit(main())
