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


NVMET = Path("/sys/kernel/config/nvmet")


def make_port(port_id: int, address: str, svcid: str = "4420") -> Path:
    """An admin's nvmet port, as nvmetcli makes one."""
    port = NVMET / "ports" / str(port_id)
    port.mkdir()
    for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                        ("addr_traddr", address), ("addr_trsvcid", svcid)):
        (port / attr).write_text(value)
    return port


def port_config(port: Path) -> dict:
    return {a: (port / a).read_text().strip() for a in (
        "addr_trtype", "addr_adrfam", "addr_traddr", "addr_trsvcid")} | {
        "subsystems": sorted(p.name for p in (port / "subsystems").iterdir())}


def test_an_admins_nvmet_ports_are_never_reused_or_changed(loop_device, unique):
    """shareblock's nvmet ports are its own by id and address: an admin's port at
    another address is untouched, an admin's port under shareblock's id or at
    shareblock's portal is refused clearly and left as it was."""
    from shareblock.targets.base import TargetError
    from shareblock.targets.nvmet import NvmetTarget
    portal = Portal("127.0.0.3", 4420 + int(unique[:2], 16) % 50)
    target = NvmetTarget([portal])
    ours = int(target.port(portal).name)
    dev = loop_device(16)
    a = Host("nvmet_tcp", f"coex-nv-{unique}")
    volume = f"coex-nv-{unique}"
    made = []
    try:
        made.append(make_port(ours, "127.0.0.4"))  # an admin's port under our id
        before = port_config(made[0])
        target.export(volume, dev)
        with pytest.raises(TargetError, match="not shareblock's"):
            target.admit(volume, a.id, "rw", a.credentials)
        assert port_config(made[0]) == before
        os.rmdir(made.pop())
        made.append(make_port(ours + 1 if ours < 8999 else ours - 1, portal.address,
                              str(portal.port)))  # an admin's port at our portal
        before = port_config(made[0])
        with pytest.raises(TargetError, match=f"served by nvmet port {made[0].name}"):
            target.admit(volume, a.id, "rw", a.credentials)
        assert port_config(made[0]) == before and a.id not in target.actual(volume)[volume].hosts
        os.rmdir(made.pop())
        made.append(make_port(ours + 2 if ours < 8998 else ours - 2, "127.0.0.5"))
        before = port_config(made[0])
        a.connect(target.admit(volume, a.id, "rw", a.credentials))  # our own port now
        data = os.urandom(1 << 20)
        a.write(data)
        assert a.read(len(data)) == data
        assert port_config(made[0]) == before, "the admin's other port is untouched"
        a.disconnect()
    finally:
        a.cleanup()
        target.unexport(volume)
        for port in made:
            os.rmdir(port)
        own = NVMET / "ports" / str(ours)
        if own.exists() and not any((own / "subsystems").iterdir()):
            os.rmdir(own)
