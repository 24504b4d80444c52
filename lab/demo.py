"""The demo: what shareblock does, step by step, on real targets in the lab."""
import os
import subprocess
import sys
import uuid
import warnings

from shareblock.lab.hosts import Host
from shareblock.lab.initiators import InitiatorError, read_back
from shareblock.targets.base import Portal
from shareblock.targets.lio import LioTarget
from shareblock.targets.nvmet import NvmetTarget

MB = 1 << 20
warnings.filterwarnings("ignore", module="rtslib_fb")


def say(text: str) -> None:
    print(f"\n--- {text}", flush=True)


def loop_device(size_mb: int) -> str:
    path = f"/tmp/shareblock-demo-{uuid.uuid4().hex[:6]}.img"
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return subprocess.run(["losetup", "-f", "--show", path], check=True,
                          capture_output=True, text=True).stdout.strip()


def scenario(protocol: str, target, token: str, shown: list) -> None:
    name = "LIO iSCSI" if protocol == "iscsi" else "nvmet NVMe/TCP"
    dev = loop_device(64)
    volume = f"demo-{protocol.split('_')[0]}-{token}"
    say(f"{name}: export volume {volume} ({dev}) to two hosts, each by its own ACL")
    target.export(volume, dev)
    a, b, x = (Host(protocol, f"{t}-{token}") for t in ("host-a", "host-b", "stranger"))
    try:
        conn_a = target.admit(volume, a.id, "rw", a.credentials)
        conn_b = target.admit(volume, b.id, "ro", b.credentials)
        print(f"admitted {a.id} rw and {b.id} ro, each with its own secret")
        dev_a, dev_b = a.connect(conn_a), b.connect(conn_b)
        print(f"host A sees {dev_a}, host B sees {dev_b}")
        data = os.urandom(MB)
        a.write(data)
        same = b.read(MB) == data
        print(f"A wrote 1 MiB; B reads the same bytes: {same}")
        shown.append((f"{name}: two hosts read the same data", same))
        before = read_back(dev, MB, 8)
        refused = b.write_fails_at_target(os.urandom(MB), 8)
        unchanged = read_back(dev, MB, 8) == before
        print(f"B (ro) tries to write with its host-side ro flag cleared: refused by the "
              f"target: {refused}, volume unchanged: {unchanged}")
        shown.append((f"{name}: read-only enforced by the target", refused and unchanged))
        try:
            x.connect(target.connection(volume, a.id), creds=x.credentials, timeout=10)
            stranger = False
        except InitiatorError:
            stranger = True
        print(f"a host with no ACL is refused: {stranger}")
        shown.append((f"{name}: host without ACL refused", stranger))
        target.revoke(volume, a.id)
        kept = b.read(MB) == data
        print(f"revoked A; B keeps its session and reads: {kept}")
        shown.append((f"{name}: revoking one host leaves the other", kept))
        seen = target.actual(volume)[volume]
        print("read back from configfs: " + ", ".join(
            f"{h} {s.mode}" for h, s in seen.hosts.items()))
    finally:
        for h in (a, b, x):
            h.cleanup()
        target.unexport(volume)


def main() -> int:
    token = uuid.uuid4().hex[:6]
    shown: list = []
    say(f"kernel {os.uname().release}: LIO and nvmet in configfs")
    scenario("iscsi", LioTarget([Portal("127.0.0.1", 3260)]), token, shown)
    scenario("nvmet_tcp", NvmetTarget([Portal("127.0.0.1", 4420)]), token, shown)
    say("what the demo showed")
    for what, ok in shown:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if shown and all(ok for _, ok in shown) else 1


if __name__ == "__main__":
    sys.exit(main())
