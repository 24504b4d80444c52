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
                shareblock_state_path=str(tmp_path / "state"))
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
