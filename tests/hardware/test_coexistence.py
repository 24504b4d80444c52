"""An admin's own targetcli export lives through shareblock's whole life cycle."""
import os
import subprocess
from pathlib import Path

import pytest

from shareblock.lab.initiators import IscsiInitiator, read_back
from shareblock.targets.base import Desired, HostAccess, Portal
from shareblock.targets.lio import LioTarget
from shareblock.lab.hosts import Host
from tests.unit.fakes import snapshot

ADMIN_IQN = "iqn.2003-01.org.linux-iscsi.admin:sn.coexist"
ADMIN_HOST = "iqn.2003-01.org.linux-iscsi.admin:client"
TARGET = Path("/sys/kernel/config/target")
ADMIN_PORTAL = "127.0.0.2"


@pytest.fixture
def targetcli(tmp_path):
    Path("/run/dbus").mkdir(exist_ok=True)
    if subprocess.run(["pgrep", "-x", "dbus-daemon"], capture_output=True).returncode:
        subprocess.run(["dbus-daemon", "--system", "--fork"], check=True)
    env = dict(os.environ, TARGETCLI_HOME=str(tmp_path / "targetcli"))

    def run(*args):
        res = subprocess.run(["targetcli", *args], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout
    return run


@pytest.fixture
def admin_export(targetcli, loop_device):
    dev = loop_device(16)
    targetcli("/backstores/block", "create", "admin_disk", dev)
    targetcli("/iscsi", "create", ADMIN_IQN)
    targetcli(f"/iscsi/{ADMIN_IQN}/tpg1/luns", "create", "/backstores/block/admin_disk")
    targetcli(f"/iscsi/{ADMIN_IQN}/tpg1/acls", "create", ADMIN_HOST)
    targetcli(f"/iscsi/{ADMIN_IQN}/tpg1", "set", "attribute", "authentication=0")
    # targetcli listens on 0.0.0.0:3260 by default, which takes the port from every other
    # address; an admin sharing a node with shareblock gives each its own address.
    targetcli(f"/iscsi/{ADMIN_IQN}/tpg1/portals", "delete", "0.0.0.0", "3260")
    targetcli(f"/iscsi/{ADMIN_IQN}/tpg1/portals", "create", ADMIN_PORTAL, "3260")
    yield dev
    targetcli("/iscsi", "delete", ADMIN_IQN)
    targetcli("/backstores/block", "delete", "admin_disk")


def admin_tree():
    tree = snapshot(TARGET / "iscsi" / ADMIN_IQN)
    # live counters and session info change with I/O; the configuration must not
    return {k: v for k, v in tree.items() if "statistics" not in k and not k.endswith("/info")}


def test_admin_export_survives_shareblock_life_cycle(admin_export, targetcli, loop_device,
                                                     unique):
    admin = IscsiInitiator(ADMIN_HOST)
    try:
        disk = admin.login(ADMIN_IQN, ADMIN_PORTAL)
        before = admin_tree()
        target = LioTarget([Portal("127.0.0.1", 3260)])
        volume, dev = f"coexist-{unique}", loop_device(16)
        a = Host("iscsi", f"coexist-{unique}")
        desired = Desired(volume, dev, [HostAccess(a.id, "rw", a.credentials)])
        try:
            target.export(volume, dev)
            target.admit(volume, a.id, "rw", a.credentials)
            listing = targetcli("ls", "/iscsi")
            assert target.target_iqn(volume) in listing and ADMIN_IQN in listing
            assert a.id in targetcli("ls", f"/iscsi/{target.target_iqn(volume)}/tpg1/acls")
            target.revoke(volume, a.id)
            target.unexport(volume)
            target.restore([desired])
        finally:
            target.unexport(volume)
        assert admin_tree() == before, "shareblock changed the admin's export"
        assert admin.session(ADMIN_IQN) is not None
        read_back(disk, 4096)  # the admin's session still does I/O
    finally:
        admin.logout(ADMIN_IQN, ADMIN_PORTAL)
        admin.remove()
