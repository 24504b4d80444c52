"""SCSI-3 persistent reservations through shareblock's LIO exports, from real
initiators (open-iscsi, one identity per host) with sg_persist: every type LIO
implements with the reads and writes each host may do, preempt, preempt and
abort, release, clear, ro attachments alongside, a departing host's
registrations, and APTPL through a target reboot and shareblock's restore."""
import json
import os
import subprocess
import time

import pytest

from shareblock.cli import main as cli
from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.lab.hosts import Host
from shareblock.lab.initiators import InitiatorError
from tests import crashlib
from tests.hardware.boot import boot_restore, load_lab_modules
from tests.hardware.reliability.test_reboot import drop_devices, unload_modules, wipe_configfs

KEYS = {"a": 0xA1, "b": 0xB2, "c": 0xC3, "d": 0xD4, "e": 0xE5}
# SPC-4 5.13.1: what a registered host that does not hold the reservation, and a
# host not registered, may do under each type: (read, write)
MATRIX = {
    1: {"registered": (True, False), "unregistered": (True, False)},    # Write Exclusive
    3: {"registered": (False, False), "unregistered": (False, False)},  # Exclusive Access
    5: {"registered": (True, True), "unregistered": (True, False)},     # WE, Registrants Only
    6: {"registered": (True, True), "unregistered": (False, False)},    # EA, Registrants Only
    7: {"registered": (True, True), "unregistered": (True, False)},     # WE, All Registrants
    8: {"registered": (True, True), "unregistered": (False, False)},    # EA, All Registrants
}


def sg(host: Host, *args) -> str:
    dev = host.device()
    # an ro attachment's disk is read-only on the host: sg_persist opens it so
    readonly = (["--readonly"] if open(f"/sys/block/{dev.name}/ro").read().strip() == "1"
                else [])
    res = subprocess.run(["sg_persist", "-n", *readonly, *args, str(dev)],
                         capture_output=True, text=True)
    if res.returncode:
        raise AssertionError(f"sg_persist {' '.join(args)} on {host.id}: "
                             f"{res.stdout}{res.stderr}")
    return res.stdout


def register(host, key, aptpl=False):
    sg(host, "--out", "--register", f"--param-sark={key:x}", *(["--param-aptpl"] * aptpl))


def reserve(host, key, kind):
    sg(host, "--out", "--reserve", f"--param-rk={key:x}", f"--prout-type={kind}")


def keys_seen(host) -> set[int]:
    out = sg(host, "--in", "--read-keys")
    return {int(w, 16) for w in out.split() if w.startswith("0x")}


def can(host: Host) -> tuple[bool, bool]:
    """(read, write) as the target answers this host now (direct I/O, 4 KiB)."""
    dev = str(host.device())
    read = subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=1",
                           "skip=64", "iflag=direct", "status=none"],
                          capture_output=True).returncode == 0
    write = subprocess.run(["dd", f"of={dev}", "if=/dev/zero", "bs=4k", "count=1",
                            "seek=64", "oflag=direct", "status=none"],
                           capture_output=True).returncode == 0
    return read, write


@pytest.fixture
def lab(tmp_path, unique):
    path = crashlib.lab_conf(tmp_path, unique)

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    cp = plane()
    t = crashlib.make_types(cp, "iscsi")
    hosts = {}

    def attach(vid, name, mode="rw"):
        host = hosts.setdefault(name, Host("iscsi", f"pr-{name}-{unique}"))
        att = cp.attachment_create(vid, host.connector(), mode=mode)
        cp.attachment_complete(att["id"])
        host.attach(cp.attachment_show(att["id"])["connection_info"])
        return host, att

    def reservations(vid):
        rc, out, err = cli.run_captured(["--config", str(path), "--json", "reservations", vid])
        assert rc == 0, err
        return json.loads(out)

    ns = type("Lab", (), {})()
    ns.cp, ns.plane, ns.t, ns.attach, ns.reservations, ns.path = (
        cp, plane, t, attach, reservations, path)
    ns.tmp = tmp_path
    yield ns
    for host in hosts.values():
        host.cleanup()
    crashlib.clean_up(plane())


def test_every_type_gives_each_host_the_access_spc4_says(lab):
    vid = lab.cp.create(1, lab.t["ma"])["id"]
    a, _ = lab.attach(vid, "a")
    b, _ = lab.attach(vid, "b")
    c, _ = lab.attach(vid, "c")
    register(a, KEYS["a"])
    register(b, KEYS["b"])
    assert keys_seen(c) == {KEYS["a"], KEYS["b"]}, "every host reads the keys"
    for kind, allowed in MATRIX.items():
        reserve(a, KEYS["a"], kind)
        seen = lab.reservations(vid)
        assert seen["holder"]["host"] == a.id and seen["type"] == kind, seen
        assert {r["host"] for r in seen["registrations"]} == {a.id, b.id}
        assert can(a) == (True, True), f"type {kind}: the holder reads and writes"
        assert can(b) == allowed["registered"], f"type {kind}: a registrant"
        assert can(c) == allowed["unregistered"], f"type {kind}: a stranger"
        sg(a, "--out", "--release", f"--param-rk={KEYS['a']:x}", f"--prout-type={kind}")
        assert lab.reservations(vid)["holder"] is None
        assert can(c) == (True, True), f"type {kind}: released, every host writes"


def test_preempt_abort_clear_and_ro_attachments_alongside(lab):
    vid = lab.cp.create(1, lab.t["ma"])["id"]
    a, _ = lab.attach(vid, "a")
    b, _ = lab.attach(vid, "b")
    d, _ = lab.attach(vid, "d", mode="ro")  # write_protect at the target
    register(a, KEYS["a"])
    register(b, KEYS["b"])
    # LIO refuses every data-out command on a write-protected LUN, PR OUT too:
    # an ro host reads the reservation but makes none
    with pytest.raises(AssertionError, match="(?i)protect"):
        register(d, KEYS["d"])
    assert keys_seen(d) == {KEYS["a"], KEYS["b"]}
    reserve(a, KEYS["a"], 5)
    assert can(d) == (True, False), "ro: it reads, write_protect refuses its writes"
    # b takes the reservation and removes a's registration (fence_scsi's way)
    sg(b, "--out", "--preempt", f"--param-rk={KEYS['b']:x}", f"--param-sark={KEYS['a']:x}",
       "--prout-type=5")
    seen = lab.reservations(vid)
    assert seen["holder"]["host"] == b.id
    assert [r["host"] for r in seen["registrations"]] == [b.id]
    assert can(a) == (True, False), "preempted: a may no longer write"
    register(a, KEYS["a"])
    sg(b, "--out", "--preempt-abort", f"--param-rk={KEYS['b']:x}",
       f"--param-sark={KEYS['a']:x}", "--prout-type=5")
    assert [r["host"] for r in lab.reservations(vid)["registrations"]] == [b.id]
    assert can(a) == (True, False)
    sg(b, "--out", "--clear", f"--param-rk={KEYS['b']:x}")
    seen = lab.reservations(vid)
    assert seen["holder"] is None and seen["registrations"] == []
    assert can(a) == (True, True) and can(d) == (True, False)


def test_a_departing_host_takes_its_registrations_and_reservation(lab):
    """LIO frees a host's registrations with its ACL (and releases a reservation it
    held): detach, and the other hosts see it gone."""
    vid = lab.cp.create(1, lab.t["ma"])["id"]
    a, att_a = lab.attach(vid, "a")
    b, _ = lab.attach(vid, "b")
    c, _ = lab.attach(vid, "c")
    register(a, KEYS["a"])
    register(b, KEYS["b"])
    reserve(a, KEYS["a"], 5)
    assert can(c) == (True, False)
    a.disconnect()
    lab.cp.attachment_delete(att_a["id"])
    seen = lab.reservations(vid)
    assert seen["holder"] is None, "the reservation went with its holder's ACL"
    assert [r["host"] for r in seen["registrations"]] == [b.id]
    assert keys_seen(b) == {KEYS["b"]}
    assert can(c) == (True, True)
    a2, _ = lab.attach(vid, "a")  # back again: a new registration is the host's to make
    assert keys_seen(a2) == {KEYS["b"]}


def wait_logged_in(hosts, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(h.connected() for h in hosts):
            return
        time.sleep(2)
    raise AssertionError("sessions did not come back: "
                         + ", ".join(h.id for h in hosts if not h.connected()))


def test_aptpl_registrations_and_reservation_survive_a_target_reboot(lab):
    """Hosts ride the reboot out (open-iscsi recovers the same session, same ISID);
    the boot-time restore replays the kernel's APTPL records before the LUN is
    exported: the reservation holds again. A host revoked before the reboot does
    not get its registration back."""
    vid = lab.cp.create(1, lab.t["ma"])["id"]
    e, att_e = lab.attach(vid, "e")
    register(e, KEYS["e"], aptpl=True)
    a, _ = lab.attach(vid, "a")
    b, _ = lab.attach(vid, "b")
    c, _ = lab.attach(vid, "c")
    register(a, KEYS["a"], aptpl=True)
    register(b, KEYS["b"], aptpl=True)
    reserve(a, KEYS["a"], 5)
    e.disconnect()
    lab.cp.attachment_delete(att_e["id"])  # its record stays in the kernel's file
    before = lab.reservations(vid)
    assert before["aptpl"] and {r["host"] for r in before["registrations"]} == {a.id, b.id}
    data = os.urandom(1 << 20)
    a.write(data, offset_mb=2)  # clear of can()'s probe writes

    wipe_configfs()
    drop_devices([lab.tmp / "lio-volumes", lab.tmp / "nvme-volumes"])
    unload_modules()
    booted = boot_restore(lab.tmp / "state" / "node")
    assert booted.returncode == 0, booted.stderr
    load_lab_modules()  # nvmet too, for the tests after this one
    wait_logged_in([a, b, c])

    after = lab.reservations(vid)
    assert after["holder"] == before["holder"] and after["type"] == 5, after
    assert {(r["host"], r["isid"], r["key"]) for r in after["registrations"]} == {
        (r["host"], r["isid"], r["key"]) for r in before["registrations"]}
    assert after["aptpl"] is True
    assert can(a) == (True, True) and can(b) == (True, True)
    assert can(c) == (True, False), "the reservation is enforced again"
    assert a.read(1 << 20, offset_mb=2) == data
    e2, _ = lab.attach(vid, "e")
    assert KEYS["e"] not in keys_seen(e2), "the revoked host's registration stayed gone"
    with pytest.raises(InitiatorError):
        e2.write(os.urandom(1 << 20))
