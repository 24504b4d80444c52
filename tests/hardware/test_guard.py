"""The guard on real targets: real ext4, real initiators, both transports."""
import subprocess

import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host


@pytest.fixture
def plane(tmp_path):
    cp = ControlPlane(config.load(str(lab_config.write(tmp_path))), user="root")
    for proto, name in (("iSCSI", "ma-iscsi"), ("NVMe-oF", "ma-nvmet_tcp")):
        for guard_mode in ("enforce", "off"):
            tname = f"{name}-{guard_mode}"
            cp.type_create(tname)
            cp.type_key(tname, "set", {"multiattach": "<is> True", "storage_protocol": proto,
                                       "shareblock:fs_guard": guard_mode})
    return cp


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def write_files(mnt, n=5):
    files = {}
    for i in range(n):
        data = f"file {i} written by host A\n" * 1000
        (mnt / f"f{i}.txt").write_text(data)
        files[f"f{i}.txt"] = data
    sh("sync")
    return files


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_second_writer_on_ext4_is_read_only_at_the_target(plane, protocol, tmp_path, unique):
    vol = plane.create(1, f"ma-{protocol}-enforce")
    a, b = Host(protocol, f"g-a-{unique}"), Host(protocol, f"g-b-{unique}")
    mnt_a, mnt_b = tmp_path / "a", tmp_path / "b"
    mnt_a.mkdir()
    mnt_b.mkdir()
    atts = []
    try:
        att_a = plane.attachment_create(vol["id"], a.connector())
        atts.append(att_a)
        dev_a = str(a.attach(att_a["connection_info"]))
        sh("mkfs.ext4", "-q", dev_a)
        sh("mount", dev_a, str(mnt_a))
        files = write_files(mnt_a)

        att_b = plane.attachment_create(vol["id"], b.connector())
        atts.append(att_b)
        assert att_b["attach_mode"] == "ro" and "ext4" in att_b["reason"]
        assert att_b["connection_info"]["data"]["access_mode"] == "ro"
        dev_b = str(b.attach(att_b["connection_info"]))
        sh("mount", "-o", "ro,noload", dev_b, str(mnt_b))
        assert {f: (mnt_b / f).read_text() for f in files} == files, "B reads A's files"
        sh("umount", str(mnt_b))
        assert b.write_fails_at_target(b"x" * (1 << 20), offset_mb=200)

        sh("umount", str(mnt_a))
        for host, att in ((a, att_a), (b, att_b)):
            host.disconnect()
            plane.attachment_delete(att["id"])
        atts.clear()
        device = plane.driver(vol["os-vol-host-attr:host"]).pool.device(vol["id"])
        assert sh("fsck.ext4", "-n", "-f", device, check=False).returncode == 0
        sh("mount", "-o", "ro", device, str(mnt_a))
        assert {f: (mnt_a / f).read_text() for f in files} == files, "A's files are intact"
        sh("umount", str(mnt_a))
        assert [e["action"] for e in plane.events(vol["id"])] == ["demoted"]
    finally:
        for m in (mnt_a, mnt_b):
            sh("umount", str(m), check=False)
        for att in atts:
            plane.attachment_delete(att["id"])
        a.cleanup()
        b.cleanup()


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_guard_off_two_writers_on_ext4_is_reported(plane, protocol, tmp_path, unique, capsys):
    """What the seed warns of, on purpose: report what happened, do not assert it."""
    vol = plane.create(1, f"ma-{protocol}-off")
    a, b = Host(protocol, f"o-a-{unique}"), Host(protocol, f"o-b-{unique}")
    mnts = [tmp_path / "a", tmp_path / "b"]
    for m in mnts:
        m.mkdir()
    atts = []
    try:
        atts.append(plane.attachment_create(vol["id"], a.connector()))
        dev_a = str(a.attach(atts[0]["connection_info"]))
        sh("mkfs.ext4", "-q", dev_a)
        atts.append(plane.attachment_create(vol["id"], b.connector()))
        assert atts[1]["attach_mode"] == "rw", "guard off grants rw"
        dev_b = str(b.attach(atts[1]["connection_info"]))
        sh("mount", dev_a, str(mnts[0]))
        sh("mount", dev_b, str(mnts[1]))
        for i, m in enumerate(mnts):
            for n in range(20):
                (m / f"host{i}-{n}.txt").write_text(f"host {i} file {n}\n" * 500)
            sh("sync")
        for m in mnts:
            sh("umount", str(m))
        for host, att in zip((a, b), atts, strict=True):
            host.disconnect()
            plane.attachment_delete(att["id"])
        atts.clear()
        device = plane.driver(vol["os-vol-host-attr:host"]).pool.device(vol["id"])
        fsck = sh("fsck.ext4", "-n", "-f", device, check=False)
        with capsys.disabled():
            print(f"\n[guard off, {protocol}] two hosts wrote 20 files each through their own "
                  f"ext4 mounts; fsck -n exit {fsck.returncode}: "
                  f"{'clean' if fsck.returncode == 0 else 'DAMAGED'}; "
                  f"{len(fsck.stdout.splitlines())} lines of findings")
    finally:
        for m in mnts:
            sh("umount", str(m), check=False)
        for att in atts:
            plane.attachment_delete(att["id"])
        a.cleanup()
        b.cleanup()


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_run_time_guard_demotes_the_idle_writer(plane, protocol, tmp_path, unique):
    vol = plane.create(1, f"ma-{protocol}-enforce")
    a, b = Host(protocol, f"r-a-{unique}"), Host(protocol, f"r-b-{unique}")
    mnt = tmp_path / "a"
    mnt.mkdir()
    atts = []
    try:
        for host in (a, b):
            att = plane.attachment_create(vol["id"], host.connector())
            assert att["attach_mode"] == "rw", "blank volume: both get rw"
            plane.attachment_complete(att["id"])
            atts.append(att)
        dev_a = str(a.attach(atts[0]["connection_info"]))
        b.attach(atts[1]["connection_info"])
        sh("mkfs.ext4", "-q", dev_a)
        sh("mount", dev_a, str(mnt))
        write_files(mnt)
        done = plane.guard_pass()
        assert [(d["host"], d["action"]) for d in done] == [(b.id, "demoted")]
        assert b.write_fails_at_target(b"x" * (1 << 20), offset_mb=300)
        (mnt / "after.txt").write_text("A keeps writing\n" * 1000)
        sh("sync")
        assert (mnt / "after.txt").read_text().startswith("A keeps writing")
        assert a.connected()
        sh("umount", str(mnt))
    finally:
        sh("umount", str(mnt), check=False)
        for host, att in zip((a, b), atts, strict=False):
            host.disconnect()
            plane.attachment_delete(att["id"])
        a.cleanup()
        b.cleanup()
