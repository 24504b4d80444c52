"""The backend driver on real pools (sparse files, LVM thin) and real targets."""
import os
import subprocess

import pytest

from shareblock.driver.pools import FilePool, LvmThinPool
from shareblock.driver.volume_driver import ShareBlockDriver
from shareblock.lab.hosts import Host

MB = 1 << 20


class Conf(dict):
    def safe_get(self, name):
        return self.get(name)


@pytest.fixture(scope="module")
def thin_pool(tmp_path_factory):
    """An LVM thin pool on a loop device, as the lab sets one up."""
    img = tmp_path_factory.mktemp("lvm") / "pv.img"
    with open(img, "wb") as f:
        f.truncate(3 << 30)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    vg = "sblab" + os.urandom(3).hex()
    subprocess.run(["vgcreate", "-q", vg, dev], check=True, capture_output=True)
    subprocess.run(["lvcreate", "-q", "-L", "2g", "-T", f"{vg}/thin"], check=True,
                   capture_output=True)
    yield vg
    subprocess.run(["vgremove", "-q", "-f", vg], capture_output=True)
    subprocess.run(["losetup", "-d", dev])


@pytest.fixture(params=[("iscsi", "file"), ("nvmet_tcp", "file"), ("iscsi", "lvm"),
                        ("nvmet_tcp", "lvm")], ids=lambda p: "-".join(p))
def driver(request, tmp_path, thin_pool):
    protocol, kind = request.param
    conf = Conf(target_protocol=protocol, volume_backend_name=f"lab-{protocol}",
                target_ip_address="127.0.0.1", shareblock_multiattach=True,
                shareblock_pool=f"file:{tmp_path}/vols" if kind == "file"
                else f"lvm:{thin_pool}/thin",
                shareblock_state_path=str(tmp_path / "state"),
                shareblock_node_state_path=str(tmp_path / "node"))
    drv = ShareBlockDriver(conf)
    drv.do_setup()
    drv.check_for_setup_error()
    assert isinstance(drv.pool, FilePool if kind == "file" else LvmThinPool)
    return drv


def test_volume_life_cycle_with_two_hosts(driver, unique):
    protocol = driver.protocol
    vol = {"id": f"drv-{unique}", "size": 1, "volume_attachment": []}
    a, b = Host(protocol, f"drv-a-{unique}"), Host(protocol, f"drv-b-{unique}")
    conn_a = ({"initiator": a.id} if protocol == "iscsi" else {"nqn": a.id})
    conn_b = ({"initiator": b.id, "mode": "ro"} if protocol == "iscsi"
              else {"nqn": b.id, "mode": "ro"})
    try:
        driver.create_volume(vol)
        stats = driver.get_volume_stats(refresh=True)
        assert stats["multiattach"] and stats["pools"][0]["provisioned_capacity_gb"] >= 1
        driver.create_export(None, vol, None)
        info_a = driver.initialize_connection(vol, conn_a)
        info_b = driver.initialize_connection(vol, conn_b)
        assert info_b["data"]["access_mode"] == "ro"
        a.attach(info_a)
        b.attach(info_b)
        data = os.urandom(MB)
        a.write(data)
        assert b.read(MB) == data
        assert b.write_fails_at_target(os.urandom(MB), 1)

        att_a = {"id": "att-a", "connector": conn_a}
        att_b = {"id": "att-b", "connector": conn_b}
        vol["volume_attachment"] = [att_a, att_b]
        assert driver.terminate_connection(vol, conn_a, attachment=att_a) is True
        assert b.read(MB) == data, "the other host keeps its access"
        seen = driver.target.actual(vol["id"])[vol["id"]]
        assert set(seen.hosts) == {b.id}

        b.disconnect()
        a.disconnect()
        driver.extend_volume(vol, 2)
        clone = {"id": f"drv-clone-{unique}", "size": 2}
        driver.create_cloned_volume(clone, vol)
        dev = driver.pool.device(clone["id"])
        with open(dev, "rb") as f:
            assert f.read(MB) == data, "the clone holds the source's data"
        driver.delete_volume(clone)
    finally:
        a.cleanup()
        b.cleanup()
        driver.remove_export(None, vol)
        driver.delete_volume(vol)
    assert vol["id"] not in driver.target.actual()


@pytest.mark.parametrize("last", ["rw", "ro"], ids=["ro-detached-first", "rw-detached-first"])
def test_one_host_with_rw_and_ro_attachments(driver, unique, last):
    """Host A attaches V rw (VM 1) and again ro (VM 2): A stays rw. Detaching one
    attachment leaves A with the mode of what it still holds, read back from
    configfs and proven with a real write."""
    protocol = driver.protocol
    vid = f"drv-rwro-{unique}"
    vol = {"id": vid, "size": 1, "multiattach": True, "volume_attachment": []}
    a = Host(protocol, f"drv-rwro-{unique}")
    key = "initiator" if protocol == "iscsi" else "nqn"
    rw_att = {"id": "vm1", "attach_mode": "rw", "connector": {key: a.id}}
    ro_att = {"id": "vm2", "attach_mode": "ro", "connector": {key: a.id, "mode": "ro"}}

    def mode_at_target():
        return driver.target.actual(vid)[vid].hosts[a.id].mode

    try:
        driver.create_volume(vol)
        driver.create_export(None, vol, None)
        info = driver.initialize_connection(vol, rw_att["connector"])
        vol["volume_attachment"] = [rw_att]
        info_ro = driver.initialize_connection(vol, ro_att["connector"])
        vol["volume_attachment"] = [rw_att, ro_att]
        assert info["data"]["access_mode"] == "rw"
        assert info_ro["data"]["access_mode"] == "ro", "VM 2's attachment is ro to its user"
        assert mode_at_target() == "rw", "a second, ro attachment must not take A's write"
        a.attach(info)
        data = os.urandom(MB)
        a.write(data)
        assert a.read(MB) == data

        gone, kept = (ro_att, rw_att) if last == "rw" else (rw_att, ro_att)
        assert driver.terminate_connection(vol, gone["connector"], attachment=gone) is True
        vol["volume_attachment"] = [kept]
        if last == "rw":
            assert mode_at_target() == "rw"
            more = os.urandom(MB)
            a.write(more, 1)
            assert a.read(MB, 1) == more, "VM 1 keeps writing"
        else:
            assert mode_at_target() == "ro", "only a ro attachment left: ro at the target, live"
            assert a.write_fails_at_target(os.urandom(MB), 1)
            assert a.read(MB) == data, "reads still work"
        assert driver.terminate_connection(vol, kept["connector"], attachment=kept) is None
        assert a.id not in driver.target.actual(vid)[vid].hosts
        a.disconnect()
    finally:
        a.cleanup()
        driver.remove_export(None, vol)
        driver.delete_volume(vol)
