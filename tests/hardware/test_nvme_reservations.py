"""NVMe reservations through shareblock's nvmet exports, from real initiators
(nvme-cli, one host NQN and host id per host), on a volume type that asks for
one reservation domain (`shared_reservations`).

nvmet has reservations from Linux 6.13: the lab runs these tests on the
backports kernel (`shareblock-lab run --kernel backports`). On a kernel without
them the spec is refused, which the first test checks there."""
import json
import os
import subprocess

import pytest

from shareblock.control import config
from shareblock.control.api import Conflict, ControlPlane
from shareblock.lab.hosts import Host
from tests import crashlib
from tests.hardware.test_fencing import fence_agent, fio_writer, reads_back, write_fails
from tests.hardware.test_reservations import can, wait_logged_in

MB = 1 << 20
NVMET = "/sys/kernel/config/nvmet"
KEYS = {"a": 0xA1, "b": 0xB2, "c": 0xC3}
# NVMe base spec 2.x, 8.19.1 (reservation types) and the command behaviour table:
# what a registrant that does not hold the reservation, and a host that is not
# registered, may do: (read, write). Types 5 and 6 make every registrant a holder.
MATRIX = {
    1: {"registered": (True, False), "unregistered": (True, False)},    # Write Exclusive
    2: {"registered": (False, False), "unregistered": (False, False)},  # Exclusive Access
    3: {"registered": (True, True), "unregistered": (True, False)},     # WE, Registrants Only
    4: {"registered": (True, True), "unregistered": (False, False)},    # EA, Registrants Only
    5: {"registered": (True, True), "unregistered": (True, False)},     # WE, All Registrants
    6: {"registered": (True, True), "unregistered": (False, False)},    # EA, All Registrants
}


def kernel_has_reservations() -> bool:
    """Read from the kernel itself: a namespace made by hand, and removed."""
    sub = f"{NVMET}/subsystems/nqn.2026-12.io.shareblock.test:resv-question"
    os.mkdir(sub)
    try:
        os.mkdir(f"{sub}/namespaces/1")
        try:
            return os.path.exists(f"{sub}/namespaces/1/resv_enable")
        finally:
            os.rmdir(f"{sub}/namespaces/1")
    finally:
        os.rmdir(sub)


HAS_RESERVATIONS = kernel_has_reservations() if os.path.isdir(NVMET) else False
needs_reservations = pytest.mark.skipif(
    not HAS_RESERVATIONS and os.environ.get("SHAREBLOCK_LAB_KERNEL") != "backports",
    reason="this kernel's nvmet has no reservations (Linux 6.13+): "
           "shareblock-lab run --kernel backports")


def nvme(host: Host, *args) -> str:
    res = subprocess.run(["nvme", *args[:1], str(host.device()), "-n", "1", *args[1:]],
                         capture_output=True, text=True)
    if res.returncode:
        raise AssertionError(f"nvme {' '.join(args)} on {host.id}: {res.stdout}{res.stderr}")
    return res.stdout


def register(host: Host, key: int) -> None:
    nvme(host, "resv-register", f"--nrkey={key:#x}", "--rrega=0")


def acquire(host: Host, key: int, rtype: int, action: int = 0, preempted: int = 0) -> None:
    nvme(host, "resv-acquire", f"--crkey={key:#x}", f"--prkey={preempted:#x}",
         f"--rtype={rtype}", f"--racqa={action}")


def release(host: Host, key: int, rtype: int, clear: bool = False) -> None:
    nvme(host, "resv-release", f"--crkey={key:#x}", f"--rtype={rtype}",
         f"--rrela={1 if clear else 0}")


def report(host: Host) -> dict:
    """The reservation as this host's controller reports it: type, and each
    registrant's host id -> (key, holds)."""
    data = json.loads(nvme(host, "resv-report", "-e", "1", "-o", "json"))
    return {"type": data["rtype"],
            "registrants": {r["hostid"]: (r["rkey"], bool(r["rcsts"] & 1))
                            for r in data.get("regctlext", [])}}


def hostid(host: Host) -> str:
    return host.initiator.hostid.replace("-", "")


@pytest.fixture
def lab(tmp_path, unique):
    path = crashlib.lab_conf(tmp_path, unique)

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    cp = plane()
    crashlib.make_types(cp, "nvmet_tcp")
    cluster = f"cluster-{unique}"
    cp.type_create(cluster)
    cp.type_key(cluster, "set", {"multiattach": "<is> True", "storage_protocol": "NVMe-oF",
                                 "shared_reservations": "<is> True"})
    hosts = {}

    def attach(vid, name, node=None, mode="rw"):
        # a lost controller is retried for 30 s: long enough to ride out a revoke's
        # reconnect, short enough that a fenced host's writes fail in the test
        host = hosts.setdefault(name, Host("nvmet_tcp", f"resv-{name}-{unique}",
                                           lost_after=30))
        att = cp.attachment_create(vid, host.connector(node), mode=mode)
        cp.attachment_complete(att["id"])
        info = cp.attachment_show(att["id"])["connection_info"]
        host.attach(info)
        return host, att, info

    ns = type("Lab", (), {})()
    ns.cp, ns.plane, ns.attach, ns.path, ns.cluster = cp, plane, attach, path, cluster
    yield ns
    for host in hosts.values():
        host.cleanup()
    crashlib.clean_up(plane())


def test_the_capability_is_what_the_kernel_has(lab, caplog):
    """The backend reports shared_reservations exactly when nvmet has them; where
    it has not, a volume of that type fails scheduling and the target refuses the
    shape, leaving nothing behind."""
    if os.environ.get("SHAREBLOCK_LAB_KERNEL") == "backports":
        assert HAS_RESERVATIONS, "the backports kernel must have nvmet reservations"
    drv = lab.cp.driver("nvme")  # the lab's nvmet backend (lab/config.py)
    stats = drv.get_volume_stats(refresh=True)
    assert stats["pools"][0]["shared_reservations"] is HAS_RESERVATIONS
    if HAS_RESERVATIONS:
        return
    vol = lab.cp.create(1, lab.cluster)
    assert lab.cp.show(vol["id"])["status"] == "error"
    assert "shared_reservations=False" in caplog.text
    plain = lab.cp.create(1, "ma-nvmet_tcp")["id"]  # a volume the pool holds
    before = sorted(os.listdir(f"{NVMET}/subsystems"))
    with pytest.raises(Exception, match="no reservations"):
        drv.create_export(None, {"id": plain, "volume_type": {
            "extra_specs": {"shared_reservations": "<is> True"}}})
    assert sorted(os.listdir(f"{NVMET}/subsystems")) == before
    assert plain not in drv.recorded_exports(plain), "and no document"


@needs_reservations
def test_every_type_gives_each_host_the_access_the_spec_says(lab):
    vid = lab.cp.create(1, lab.cluster)["id"]
    a, _, info = lab.attach(vid, "a")
    b, _, _ = lab.attach(vid, "b")
    c, _, _ = lab.attach(vid, "c")
    assert info["data"]["target_nqn"] == c.conn.target, "one subsystem for every host"
    with pytest.raises(Conflict, match="no per-host write protect"):
        lab.cp.attachment_create(vid, Host("nvmet_tcp", "resv-ro").connector(), mode="ro")
    register(a, KEYS["a"])
    register(b, KEYS["b"])
    seen = report(c)
    assert seen["registrants"] == {hostid(a): (KEYS["a"], False),
                                   hostid(b): (KEYS["b"], False)}, "c sees both"
    for rtype, allowed in MATRIX.items():
        acquire(a, KEYS["a"], rtype)
        seen = report(b)
        assert seen["type"] == rtype and seen["registrants"][hostid(a)][1], seen
        assert can(a) == (True, True), f"type {rtype}: the holder reads and writes"
        assert can(b) == allowed["registered"], f"type {rtype}: a registrant"
        assert can(c) == allowed["unregistered"], f"type {rtype}: a stranger"
        release(a, KEYS["a"], rtype)
        assert report(c)["type"] == 0
        assert can(c) == (True, True), f"type {rtype}: released, every host writes"

    acquire(a, KEYS["a"], 1)
    acquire(b, KEYS["b"], 1, action=1, preempted=KEYS["a"])  # preempt: fence_mpath's way
    seen = report(c)
    assert seen["registrants"] == {hostid(b): (KEYS["b"], True)}, seen
    assert can(a) == (True, False), "preempted: a may no longer write"
    register(a, KEYS["a"])
    acquire(b, KEYS["b"], 1, action=2, preempted=KEYS["a"])  # preempt and abort
    assert set(report(c)["registrants"]) == {hostid(b)}
    release(b, KEYS["b"], 1, clear=True)
    assert report(a) == {"type": 0, "registrants": {}}
    assert can(a) == (True, True)


@needs_reservations
def test_revoke_and_fence_end_one_host_and_keep_the_others_registrations(lab, unique):
    """A detach and a fence take one host out of the shared subsystem: every
    controller of it ends and the others reconnect, their reservation intact and
    another node's fio writer verifying its data throughout; the fenced host's
    writes fail; unfenced, it reconnects with its connection info and its
    registration is still there (nvmet keeps registrations per host id while the
    namespace is enabled)."""
    vid = lab.cp.create(1, lab.cluster)["id"]
    node_a, node_b = f"ra-{unique}", f"rb-{unique}"
    a, _, _ = lab.attach(vid, "a", node_a)
    b, _, info_b = lab.attach(vid, "b", node_b)
    c, att_c, _ = lab.attach(vid, "c")
    register(a, KEYS["a"])
    register(b, KEYS["b"])
    acquire(a, KEYS["a"], 3)  # Write Exclusive, Registrants Only: a and b write

    c.disconnect()
    lab.cp.attachment_delete(att_c["id"])
    wait_logged_in([a, b], timeout=120)
    assert report(a)["registrants"] == {hostid(a): (KEYS["a"], True),
                                        hostid(b): (KEYS["b"], False)}
    assert can(a) == (True, True) and can(b) == (True, True)
    data = os.urandom(MB)  # (can() writes its 4 KiB inside this MiB: written after it)
    b.write(data)

    writer = fio_writer(a)
    res = fence_agent(f"action=off\nport={node_b}\nconfig={lab.path}\nnodename={node_a}\n")
    assert (res.returncode, res.stdout.strip()) == (0, "Success: Powered OFF"), res.stderr
    assert write_fails(b), "the fenced node's writes fail"
    out, err = writer.communicate(timeout=900)
    assert writer.returncode == 0, f"the other node's fio writer failed: {err}{out}"
    assert report(a)["registrants"][hostid(a)] == (KEYS["a"], True), "a still holds"
    assert lab.plane().fence_status(node_b)["admitted"] == []

    res = fence_agent(f"action=on\nport={node_b}\nconfig={lab.path}\nnodename={node_a}\n")
    assert (res.returncode, res.stdout.strip()) == (0, "Success: Powered ON"), res.stderr
    b.disconnect()
    b.attach(info_b)
    assert reads_back(b, data), "the readmitted node reads what it wrote before"
    assert report(b)["registrants"] == {hostid(a): (KEYS["a"], True),
                                        hostid(b): (KEYS["b"], False)}
    assert can(b) == (True, True), "a registrant again under Registrants Only"
