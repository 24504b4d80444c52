"""Snapshots, volumes from them, revert and clones on real pools (sparse files,
an xfs that reflinks, LVM thin) behind real targets and initiators."""
import hashlib
import os
import subprocess
import threading
import time

import pytest

from shareblock.driver.pools import FilePool
from shareblock.driver.volume_driver import ShareBlockDriver
from shareblock.lab.hosts import Host
from shareblock.lab.initiators import read_back
from tests.hardware.test_driver import Conf, driver, thin_pool  # noqa: F401  (fixtures)

MB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_device(path: str, size: int, offset_mb: int = 0) -> bytes:
    """The node's own view of a pool device (no target in between)."""
    return read_back(path, size, offset_mb)


def size_of(path: str) -> int:
    return int(subprocess.run(["blockdev", "--getsize64", path], check=True,
                              capture_output=True, text=True).stdout)


def connector(host: Host, mode: str = "rw") -> dict:
    key = "initiator" if host.protocol == "iscsi" else "nqn"
    return {key: host.id, "mode": mode}


def test_snapshot_with_two_writers_then_volume_from_it_revert_and_extend(driver, unique):  # noqa: F811
    """Two hosts write (a raw multiattach volume, no filesystem); the snapshot is
    taken with both attached and both keep writing; what it holds, a volume made
    from it and the reverted volume are checked by hash."""
    protocol = driver.protocol
    vid, sid, from_id = f"snap-{unique}", f"s-{unique}", f"from-{unique}"
    vol = {"id": vid, "size": 1, "multiattach": True, "volume_attachment": []}
    made = {"id": from_id, "size": 2}
    a, b = Host(protocol, f"snap-a-{unique}"), Host(protocol, f"snap-b-{unique}")
    before_a, before_b = os.urandom(MB), os.urandom(MB)
    after_a, after_b = os.urandom(MB), os.urandom(MB)
    try:
        driver.create_volume(vol)
        driver.create_export(None, vol, None)
        atts = []
        for host, name in ((a, "att-a"), (b, "att-b")):
            info = driver.initialize_connection(vol, connector(host))
            assert info["data"]["access_mode"] == "rw"
            atts.append({"id": name, "attach_mode": "rw", "connector": connector(host)})
            vol["volume_attachment"] = list(atts)
            host.attach(info)
        a.write(before_a, 0)
        b.write(before_b, 2)

        provisioned = driver.get_volume_stats(refresh=True)["pools"][0][
            "provisioned_capacity_gb"]
        driver.create_snapshot({"id": sid, "volume_id": vid, "volume_size": 1})
        assert a.connected() and b.connected(), "nobody is detached by a snapshot"
        assert driver.get_volume_stats(refresh=True)["pools"][0][
            "provisioned_capacity_gb"] >= provisioned + 1, "the snapshot's space counts"
        a.write(after_a, 0)
        b.write(after_b, 2)
        assert a.read(MB, 2) == after_b and b.read(MB, 0) == after_a

        driver.create_volume_from_snapshot(made, {"id": sid, "volume_id": vid})
        dev = driver.pool.device(from_id)
        assert size_of(dev) == 2 << 30
        assert sha(read_device(dev, MB, 0)) == sha(before_a)
        assert sha(read_device(dev, MB, 2)) == sha(before_b)
        driver.extend_volume(made, 3)
        assert size_of(driver.pool.device(from_id)) == 3 << 30
        assert sha(read_device(driver.pool.device(from_id), MB, 2)) == sha(before_b)

        with pytest.raises(Exception, match="detach them"):
            driver.revert_to_snapshot(None, vol, {"id": sid})
        for host, att in ((a, atts[0]), (b, atts[1])):
            host.disconnect()
            driver.terminate_connection(vol, att["connector"], attachment=att)
            vol["volume_attachment"] = [x for x in vol["volume_attachment"] if x is not att]
        driver.revert_to_snapshot(None, vol, {"id": sid})
        dev = driver.pool.device(vid)
        assert sha(read_device(dev, MB, 0)) == sha(before_a)
        assert sha(read_device(dev, MB, 2)) == sha(before_b)
        assert size_of(dev) == 1 << 30
        # the reverted volume serves hosts again
        driver.create_export(None, vol, None)
        info = driver.initialize_connection(vol, connector(a))
        a.attach(info)
        assert a.read(MB, 0) == before_a
        a.disconnect()
        driver.terminate_connection(vol, connector(a), attachment={"id": "again"})
    finally:
        a.cleanup()
        b.cleanup()
        driver.remove_export(None, vol)
        driver.delete_volume(made)
        driver.delete_snapshot({"id": sid})
        driver.delete_volume(vol)
    assert vid not in driver.target.actual()


@pytest.fixture
def reflink_driver(request, tmp_path):
    """A file pool on an xfs that reflinks (as a production pool on xfs would)."""
    img = tmp_path / "xfs.img"
    with open(img, "wb") as f:
        f.truncate(4 << 30)
    loop = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                          capture_output=True, text=True).stdout.strip()
    mnt = tmp_path / "xfs"
    mnt.mkdir()
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", loop], check=True)
    subprocess.run(["mount", loop, str(mnt)], check=True)
    protocol = request.param
    conf = Conf(target_protocol=protocol, volume_backend_name=f"lab-{protocol}",
                target_ip_address="127.0.0.1", shareblock_multiattach=True,
                shareblock_pool=f"file:{mnt}/vols",
                shareblock_state_path=str(tmp_path / "state"),
                shareblock_node_state_path=str(tmp_path / "node"))
    drv = ShareBlockDriver(conf)
    drv.do_setup()
    assert isinstance(drv.pool, FilePool)
    yield drv  # the test deletes its volumes, which detaches their loop devices
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    subprocess.run(["losetup", "-d", loop], check=False)


def ext4_snapshot_while_writing(drv, unique: str, expect: str) -> None:
    """Host A writes files on ext4 (fsync'd, in a loop); host B is attached too and
    the guard makes it ro. The snapshot is taken mid-write; a volume made from it
    mounts (its journal replays) and fsck then finds nothing."""
    protocol = drv.protocol
    vid, sid, from_id = f"fs-{unique}", f"fs-s-{unique}", f"fs-from-{unique}"
    vol = {"id": vid, "size": 1, "multiattach": True, "volume_attachment": []}
    made = {"id": from_id, "size": 1}
    a, b = Host(protocol, f"fs-a-{unique}"), Host(protocol, f"fs-b-{unique}")
    mnt = f"/tmp/sb-{unique}"
    os.makedirs(mnt, exist_ok=True)
    stop = threading.Event()
    try:
        drv.create_volume(vol)
        subprocess.run(["mkfs.ext4", "-q", drv.pool.device(vid)], check=True)
        drv.create_export(None, vol, None)
        info_a = drv.initialize_connection(vol, connector(a))
        vol["volume_attachment"] = [{"id": "a", "attach_mode": "rw", "connector": connector(a)}]
        info_b = drv.initialize_connection(vol, connector(b))
        assert info_b["data"]["access_mode"] == "ro", "the guard: one writer on ext4"
        a.attach(info_a)
        b.attach(info_b)
        subprocess.run(["mount", str(a.device()), mnt], check=True)

        def writer():
            i = 0
            while not stop.is_set():
                path = f"{mnt}/f{i % 40}"
                with open(path, "wb") as f:
                    f.write(os.urandom(256 << 10))
                    f.flush()
                    os.fsync(f.fileno())
                i += 1
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(2)
        how = drv.pool.snapshot(vid, sid)
        assert how == expect
        time.sleep(1)
        stop.set()
        thread.join()
        assert b.read(4096) is not None and b.connected()
        subprocess.run(["umount", mnt], check=True)

        drv.create_volume_from_snapshot(made, {"id": sid, "volume_id": vid})
        dev = drv.pool.device(from_id)
        subprocess.run(["mount", dev, mnt], check=True)  # replays the journal
        files = os.listdir(mnt)
        subprocess.run(["umount", mnt], check=True)
        fsck = subprocess.run(["e2fsck", "-fn", dev], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert any(f.startswith("f") for f in files)
    finally:
        stop.set()
        subprocess.run(["umount", mnt], check=False, capture_output=True)
        a.cleanup()
        b.cleanup()
        drv.remove_export(None, vol)
        drv.delete_volume(made)
        drv.delete_snapshot({"id": sid})
        drv.delete_volume(vol)


@pytest.mark.parametrize("driver", [("iscsi", "lvm"), ("nvmet_tcp", "lvm")],  # noqa: F811
                         indirect=True, ids=["iscsi-lvm", "nvmet_tcp-lvm"])
def test_thin_snapshot_of_a_live_ext4_is_consistent(driver, unique):  # noqa: F811
    ext4_snapshot_while_writing(driver, unique, "thin")


@pytest.mark.parametrize("reflink_driver", ["iscsi"], indirect=True)
def test_reflink_snapshot_of_a_live_ext4_is_consistent(reflink_driver, unique):
    ext4_snapshot_while_writing(reflink_driver, unique, "reflink")
