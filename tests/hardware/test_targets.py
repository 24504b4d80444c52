"""targets/ against the real kernel and real initiators, both transports."""
import os
import subprocess
import time

import pytest

from shareblock.lab.initiators import InitiatorError, read_back
from shareblock.targets import credentials
from shareblock.targets.base import Desired, HostAccess, Portal
from shareblock.targets.lio import LioTarget
from shareblock.targets.nvmet import NvmetTarget
from shareblock.lab.hosts import Host

MB = 1 << 20


def make_target(protocol: str):
    if protocol == "iscsi":
        return LioTarget([Portal("127.0.0.1", 3260)])
    return NvmetTarget([Portal("127.0.0.1", 4420)])


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def setup(request, loop_device, unique):
    protocol = request.param
    target = make_target(protocol)
    dev = loop_device(64)
    volume = f"vol-{unique}"
    hosts = []

    def host(tag):
        h = Host(protocol, f"{tag}-{unique}")
        hosts.append(h)
        return h

    target.export(volume, dev)
    yield protocol, target, volume, dev, host
    for h in hosts:
        h.cleanup()
    target.unexport(volume)


def wait_until(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_two_hosts_share_data_ro_enforced_by_target_and_strangers_refused(setup):
    protocol, target, volume, dev, host = setup
    a, b, c, x = host("a"), host("b"), host("c"), host("x")
    conn_a = target.admit(volume, a.id, "rw", a.credentials)
    conn_b = target.admit(volume, b.id, "ro", b.credentials)
    conn_c = target.admit(volume, c.id, "rw", c.credentials)
    assert conn_b.mode == "ro" and conn_a.mode == "rw"
    a.connect(conn_a)
    b.connect(conn_b)

    data = os.urandom(MB)
    a.write(data, offset_mb=1)
    assert b.read(MB, offset_mb=1) == data, "both hosts read the same bytes"

    before = read_back(dev, MB, offset_mb=2)
    assert b.write_fails_at_target(os.urandom(MB), offset_mb=2)
    assert read_back(dev, MB, offset_mb=2) == before, "the RO host changed nothing"

    wrong = (credentials.random_chap("c") if protocol == "iscsi" else credentials.random_dhchap())
    with pytest.raises(InitiatorError):
        c.connect(conn_c, creds=wrong, timeout=10)
    with pytest.raises(InitiatorError):
        x.connect(target.connection(volume, c.id), creds=x.credentials, timeout=10)

    seen = target.actual(volume)[volume]
    assert seen.device == dev and not seen.problems
    assert {h: s.mode for h, s in seen.hosts.items()} == {a.id: "rw", b.id: "ro", c.id: "rw"}
    assert seen.hosts[a.id].counters["write_mbytes"] >= 1, "per-host write counters"
    assert seen.hosts[c.id].counters["write_mbytes"] == 0
    if protocol == "iscsi":
        assert seen.hosts[a.id].logged_in and not seen.hosts[c.id].logged_in
    else:  # discovery shows a host its own subsystem and nobody else's
        log = subprocess.run(["nvme", "discover", "-t", "tcp", "-a", "127.0.0.1", "-s", "4420",
                              f"--hostnqn={a.id}", f"--hostid={a.initiator.hostid}",
                              f"--dhchap-secret={a.credentials.dhchap_key}"],
                             capture_output=True, text=True).stdout
        assert conn_a.target in log and conn_b.target not in log


def test_live_mode_change_and_revoke_leave_the_other_host_alone(setup):
    protocol, target, volume, dev, host = setup
    a, b = host("a"), host("b")
    a.connect(target.admit(volume, a.id, "rw", a.credentials))
    b.connect(target.admit(volume, b.id, "ro", b.credentials))

    target.set_mode(volume, b.id, "rw")
    b.rescan()
    data = os.urandom(MB)
    b.write(data, offset_mb=4)
    assert a.read(MB, offset_mb=4) == data
    target.set_mode(volume, b.id, "ro")
    assert b.write_fails_at_target(os.urandom(MB), offset_mb=5)
    assert target.actual(volume)[volume].hosts[b.id].mode == "ro"

    target.revoke(volume, a.id)
    assert wait_until(lambda: not a.connected()), "the revoked host's session ends"
    with pytest.raises(InitiatorError):
        a.read(MB, offset_mb=4)
    assert b.connected()
    assert b.read(MB, offset_mb=4) == data, "the other host keeps its session and I/O"
    assert set(target.actual(volume)[volume].hosts) == {b.id}
    target.revoke(volume, a.id)  # idempotent


def test_restore_after_configfs_is_emptied_brings_hosts_back(setup):
    protocol, target, volume, dev, host = setup
    a, b = host("a"), host("b")
    desired = Desired(volume, dev, [HostAccess(a.id, "rw", a.credentials),
                                    HostAccess(b.id, "ro", b.credentials)])
    target.restore([desired])
    a.connect(target.connection(volume, a.id))
    data = os.urandom(MB)
    a.write(data)
    a.disconnect()

    target.unexport(volume)  # what a reboot leaves: nothing of ours in configfs
    assert volume not in target.actual()
    target.restore([desired])
    target.restore([desired])  # idempotent
    seen = target.actual(volume)[volume]
    assert {h: s.mode for h, s in seen.hosts.items()} == {a.id: "rw", b.id: "ro"}
    a.connect(target.connection(volume, a.id))
    b.connect(target.connection(volume, b.id))
    assert a.read(MB) == data and b.read(MB) == data
    assert b.write_fails_at_target(os.urandom(MB), offset_mb=1)


def test_exports_left_half_made_by_a_crash_are_completed_or_removed(setup):
    """A crash between two configfs writes of an export or an admit: the next
    export completes what is missing, the next revoke or unexport removes what
    was left, so that nothing keeps the volume's device open."""
    from shareblock.targets import devmapper
    protocol, target, volume, dev, host = setup
    a = host("a")
    target.unexport(volume)
    if protocol == "iscsi":
        # the backstore made and pointed at the device; not enabled, no unit serial
        so = (target.root / "core" / f"iblock_{target.backstore_index(volume)}").create() \
            / target.backstore_name(volume)
        so.create()
        so.write("control", f"udev_path={dev}", check=False)
        so.write("udev_path", dev, check=False)
        assert so.read("enable") == "0"
        target.export(volume, dev)
        assert so.read("enable") == "1"
        assert target.unit_serial(volume) in so.read("wwn/vpd_unit_serial")
    else:
        target.export(volume, dev)
        # a view with no subsystem, and a subsystem whose namespace names no device
        stray = devmapper.view_name(volume, "nqn.2014-08.org.nvmexpress:uuid:" + "0" * 32)
        devmapper.ensure(stray, dev, "rw")
        view = devmapper.view_name(volume, a.id)
        devmapper.ensure(view, dev, "rw")
        (target.subsystem(target.view_nqn(volume, a.id)).create(
            groups=("namespaces", "allowed_hosts")) / "namespaces" / "1").create()
        target.revoke(volume, a.id)
        assert devmapper.current_table(view) is None, "revoke removed the unnamed view"
        assert not target.subsystem(target.view_nqn(volume, a.id)).exists()
        target.unexport(volume)
        assert devmapper.current_table(stray) is None, "unexport removed the stray view"
        target.export(volume, dev)
    target.admit(volume, a.id, "rw", a.credentials)
    a.connect(target.connection(volume, a.id))
    data = os.urandom(MB)
    a.write(data)
    assert a.read(MB) == data
