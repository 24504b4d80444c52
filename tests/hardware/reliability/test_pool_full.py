"""A full backing pool: create fails cleanly, existing volumes keep their data.

The file pools live on a small tmpfs (size=256m). Volumes are sparse files, so
the pool fills as data is written, not as volumes are made; once it is full a
create must not hand out a volume whose writes would fail. As Cinder does, the
new volume is `error` ("no valid backend"), with no storage, export or ACL made.
"""
import hashlib
import os
import subprocess

import pytest

from shareblock.control import config
from shareblock.control.api import Conflict, ControlPlane
from tests import crashlib
from tests.hardware.reliability.conftest import MODE

MB = 1 << 20
PROTOCOLS = ("iscsi", "nvmet_tcp")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(device: str, offset: int, size: int) -> bytes:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


@pytest.fixture
def small_pool(tmp_path):
    mnt = tmp_path / "pool"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    yield mnt
    for loop in subprocess.run(["losetup", "-j", str(mnt), "-n", "-O", "NAME"],
                               capture_output=True, text=True).stdout.split():
        subprocess.run(["losetup", "-d", loop], check=False)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_pool_refuses_creates_and_keeps_existing_data(tmp_path, small_pool, unique,
                                                           report):
    path = crashlib.lab_conf(tmp_path, unique)
    text = path.read_text()
    for backend in ("lio", "nvme"):  # both pools on the small filesystem
        text = text.replace(f"file:{tmp_path}/{backend}-volumes", f"file:{small_pool}/{backend}")
    path.write_text(text)

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    cp = plane()
    types = {p: crashlib.make_types(cp, p) for p in PROTOCOLS}
    vols, sums = {}, {}
    for p in PROTOCOLS:  # an existing volume per transport, admitted to a host, with data
        vid = cp.create(1, types[p]["ma"])["id"]
        crashlib.attach(cp, vid, p, "keeper")
        device = cp.driver(cp.show(vid)["os-vol-host-attr:host"]).pool.device(vid)
        data = os.urandom(16 * MB)
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 8 * MB)
            os.fsync(fd)
        finally:
            os.close(fd)
        vols[p], sums[p] = (vid, device), sha(data)
    st = os.statvfs(small_pool)
    filler = small_pool / "filler"
    subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize), str(filler)],
                   check=True)
    assert os.statvfs(small_pool).f_bavail == 0, "the pool's filesystem is full"

    tried = refused = 0
    known = {v for v, _ in vols.values()}
    cp = plane()
    for p in PROTOCOLS:
        before = set(os.listdir(small_pool / ("lio" if p == "iscsi" else "nvme")))
        vol = cp.create(1, types[p]["ma"], name=f"too-much-{p}")
        tried += 1
        known.add(vol["id"])
        assert vol["status"] == "error", vol
        assert "no room for 1 GiB" in vol["error"], vol["error"]
        assert set(os.listdir(small_pool / ("lio" if p == "iscsi" else "nvme"))) == before
        with pytest.raises(Conflict, match="error"):
            cp.attachment_create(vol["id"], crashlib.connector(p, "late"))
        cp.delete(vol["id"])
        refused += 1
    assert crashlib.violations(cp, known) == []
    lost = 0
    for p, (vid, device) in vols.items():
        seen = cp.driver(cp.show(vid)["os-vol-host-attr:host"]).target.actual(vid)[vid]
        assert set(seen.hosts) == {crashlib.connector(p, "keeper")[
            "initiator" if p == "iscsi" else "nqn"]}, "the existing ACL stays"
        if sha(read(device, 8 * MB, 16 * MB)) != sums[p]:
            lost += 1
    filler.unlink()  # room again: creates work again
    vol = plane().create(1, types["iscsi"]["ma"])
    assert vol["status"] == "available", vol
    crashlib.clean_up(plane())
    report(tried=tried, survived=refused, lost=lost, unit="creates on a full pool",
           volumes_checked=len(vols))
    assert lost == 0


@pytest.fixture
def small_thin_pool(tmp_path):
    """A 64 MiB LVM thin pool that errors when full (no 60 s queueing)."""
    img = tmp_path / "pv.img"
    with open(img, "wb") as f:
        f.truncate(256 * MB)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    vg = "sbfull" + os.urandom(3).hex()
    subprocess.run(["vgcreate", "-q", vg, dev], check=True, capture_output=True)
    subprocess.run(["lvcreate", "-q", "-L", "64m", "-T", "--errorwhenfull", "y",
                    f"{vg}/thin"], check=True, capture_output=True)
    yield vg
    subprocess.run(["vgremove", "-q", "-f", vg], capture_output=True)
    subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.skipif(MODE != "full", reason="full mode: the file pools cover quick mode")
def test_full_thin_pool_refuses_creates_and_keeps_existing_data(tmp_path, small_thin_pool,
                                                                unique, report):
    vg = small_thin_pool
    # a high over-subscription ratio: the refusal must come from the pool being full
    path = crashlib.lab_conf(tmp_path, unique, only="lio", max_over_subscription_ratio=1000)
    path.write_text(path.read_text().replace(f"file:{tmp_path}/lio-volumes",
                                             f"lvm:{vg}/thin"))

    def plane():
        return ControlPlane(config.load(str(path)), user="root")
    cp = plane()
    t = crashlib.make_types(cp, "iscsi")
    vid = cp.create(1, t["ma"])["id"]
    crashlib.attach(cp, vid, "iscsi", "keeper")
    device = cp.driver("lio").pool.device(vid)
    data = os.urandom(16 * MB)
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    # fill the pool through another thin volume until dm-thin refuses writes
    subprocess.run(["lvcreate", "-q", "-T", f"{vg}/thin", "-V", "1g", "-n", "filler"],
                   check=True, capture_output=True)
    fill = subprocess.run(["dd", "if=/dev/urandom", f"of=/dev/{vg}/filler", "bs=1M",
                           "oflag=direct", "count=128"], capture_output=True, text=True)
    assert fill.returncode != 0, "the thin pool took more than it holds"
    assert cp.driver("lio").pool.capacity()["free_capacity_gb"] == 0

    vol = plane().create(1, t["ma"], name="too-much")
    assert vol["status"] == "error" and "no room for 1 GiB" in vol["error"], vol
    lvs = subprocess.run(["lvs", "--noheadings", "-o", "lv_name", vg], capture_output=True,
                         text=True).stdout.split()
    assert f"sb-{vol['id']}" not in lvs, "no LV made for the refused volume"
    cp = plane()
    cp.delete(vol["id"])
    assert crashlib.violations(cp, {vid, vol["id"]}) == []
    lost = int(sha(read(device, 0, 16 * MB)) != sha(data))
    subprocess.run(["lvremove", "-q", "-f", f"{vg}/filler"], check=True, capture_output=True)
    crashlib.clean_up(cp)
    report(tried=1, survived=1, lost=lost, unit="creates on a full thin pool")
    assert lost == 0
