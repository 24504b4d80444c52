"""The storage node becomes unreachable over SSH in the middle of an operation.

One backend's targets live on a "remote" storage node (sshd on 127.0.0.1:2222,
the agent run over SSH). After step k of an operation (a crash point, armed to
carry on) the node is cut off: the next remote call meets a closed port. The
operation must fail with a clear error naming the unreachable node; reconcile
while the node is away must fail clearly too, not half-work; once the node is
back, reconcile converges (crashlib.violations) and everything can be deleted.

Every remote call starts the agent (a Python process) on the node, seconds under
emulation (about half a minute each on a loaded lab machine): quick mode cuts
one step, full mode one per transport, each leaving partial state on the node.
"""
import time

import pytest

from shareblock.control import config
from shareblock.control.api import ControlError, ControlPlane
from shareblock.targets import crashpoints
from shareblock.targets.base import TargetError
from tests import crashlib
from tests.hardware.reliability.conftest import MODE

DEAD = "ssh://root@127.0.0.1:1"  # nothing listens there: connection refused
BACKEND = {"iscsi": "lio", "nvmet_tcp": "nvme"}
# (protocol, operation, k): the node goes away after the kth crash point.
QUICK = [("iscsi", "attach-first", 2)]     # after the export, before admitting the host
FULL = QUICK + [("nvmet_tcp", "detach-last", 2)]  # after the revoke, before the unexport
# (over SSH, the "desired" points are reached in the node's agent, not counted here)


@pytest.mark.parametrize("protocol, operation, k", FULL if MODE == "full" else QUICK)
def test_node_unreachable_mid_operation(protocol, operation, k, sshd, tmp_path, unique,
                                        report, capsys):
    backend = BACKEND[protocol]
    agent = sshd["agent"]
    path = crashlib.lab_conf(tmp_path, unique, only=backend,
                             shareblock_storage_node=sshd["url"],
                             shareblock_known_hosts=sshd["known_hosts"],
                             shareblock_ssh_key=sshd["key"], shareblock_remote_agent=agent)

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    started = time.monotonic()
    t = crashlib.make_types(plane(), protocol)
    setup, op = crashlib.OPERATIONS[operation]
    cp = plane()
    ctx = {**setup(cp, t), "t": t}
    known = {r["id"] for r in cp.db.query("SELECT id FROM volumes")}
    target = cp.driver(backend).target

    def cut(trail):
        target.close()
        target.url = DEAD

    crashpoints.arm(k, action="continue", on_crash=cut)
    try:
        with pytest.raises(ControlError, match="unreachable") as failed:
            op(cp, ctx)
    finally:
        trail = crashpoints.disarm()
    assert len(trail) >= k and target.url == DEAD, f"the cut never happened: {trail}"
    with pytest.raises((TargetError, ControlError), match="unreachable"):
        cp.reconcile()  # the node is still away: a clear error, nothing half-done

    cp = plane()  # the node is back
    cp.reconcile()
    bad = crashlib.violations(cp, known)
    crashlib.clean_up(cp)
    if MODE == "full":  # one more round trip per check: full mode only
        bad += crashlib.violations(cp, known)
    with capsys.disabled():
        print(f"\n[ssh {protocol} {operation} cut after {trail[k - 1]} ({k})] "
              f"{str(failed.value)[:120]}; {time.monotonic() - started:.0f} s")
    report(tried=1, survived=int(not bad), lost=int(bool(bad)), unit="cuts",
           operation=operation, after=f"{k}: {trail[k - 1]}", error=str(failed.value))
    assert bad == []
