"""The demo: what shareblock does, step by step, on real targets in the lab."""
import os
import sys
import uuid

from shareblock.lab.initiators import (InitiatorError, IscsiInitiator, NvmeInitiator,
                                       read_back, write_pattern)
from shareblock.lab.proof import lio_export, nvmet_export


def say(text: str) -> None:
    print(f"\n--- {text}", flush=True)


def loop_device(size_mb: int) -> str:
    import subprocess
    path = f"/tmp/shareblock-demo-{uuid.uuid4().hex[:6]}.img"
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return subprocess.run(["losetup", "-f", "--show", path], check=True,
                          capture_output=True, text=True).stdout.strip()


def main() -> int:
    token = uuid.uuid4().hex[:6]
    shown = []
    say(f"kernel {os.uname().release}: LIO and nvmet in configfs")
    dev_i, dev_n = loop_device(64), loop_device(64)
    print(f"two block devices: {dev_i} (iSCSI) and {dev_n} (NVMe/TCP)")

    iqn = f"iqn.2026-11.io.shareblock.demo:{token}"
    host = IscsiInitiator(f"iqn.2026-11.io.shareblock.demo:host-a-{token}")
    stranger = IscsiInitiator(f"iqn.2026-11.io.shareblock.demo:stranger-{token}")
    chap = ("host-a", "demo-secret-" + token)
    say(f"LIO export {iqn}: CHAP required, one ACL for {host.iqn}")
    with lio_export(dev_i, iqn, f"demo_{token}", {host.iqn: chap}):
        disk = host.login(iqn, "127.0.0.1", chap=chap)
        print(f"open-iscsi logged in as {host.iqn}: {disk}")
        pattern = os.urandom(1 << 20)
        write_pattern(disk, pattern)
        ok = read_back(disk, len(pattern)) == pattern == read_back(dev_i, len(pattern))
        print(f"1 MiB pattern written through iSCSI, read back identical: {ok}")
        shown.append(("iSCSI round trip", ok))
        try:
            stranger.login(iqn, "127.0.0.1", chap=chap)
            refused = False
        except InitiatorError as e:
            refused = True
            print(f"{stranger.iqn} has no ACL: refused ({str(e).splitlines()[0][:90]})")
        shown.append(("iSCSI stranger refused", refused))
        for who in (host, stranger):
            who.logout(iqn, "127.0.0.1")
            who.remove()

    nqn = f"nqn.2026-11.io.shareblock.demo:{token}"
    nhost = NvmeInitiator(f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}")
    nstranger = NvmeInitiator(f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}")
    say(f"nvmet export {nqn}: allow_any_host=0, allowed host {nhost.hostnqn}")
    with nvmet_export(dev_n, nqn, [nhost.hostnqn], port_id=902):
        disk = nhost.connect(nqn, "127.0.0.1")
        print(f"nvme-cli connected as {nhost.hostnqn}: {disk}")
        pattern = os.urandom(1 << 20)
        write_pattern(disk, pattern)
        ok = read_back(disk, len(pattern)) == pattern == read_back(dev_n, len(pattern))
        print(f"1 MiB pattern written through NVMe/TCP, read back identical: {ok}")
        shown.append(("NVMe/TCP round trip", ok))
        try:
            nstranger.connect(nqn, "127.0.0.1", timeout=5)
            refused = False
        except InitiatorError:
            refused = True
            print(f"{nstranger.hostnqn} is not in allowed_hosts: refused")
        shown.append(("NVMe/TCP stranger refused", refused))
        nhost.disconnect(nqn)

    say("what the demo showed")
    for what, ok in shown:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    return 0 if all(ok for _, ok in shown) else 1


if __name__ == "__main__":
    sys.exit(main())
