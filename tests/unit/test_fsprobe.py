"""The classifier on real images made with the real mkfs tools."""
import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest

from shareblock.blockdev import fsprobe, libblkid

MB = 1 << 20


def image(tmp_path, name, size_mb=300):
    path = tmp_path / f"{name}.img"
    with open(path, "wb") as f:
        f.truncate(size_mb * MB)
    return str(path)


def run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


MKFS = {
    "ext2": (["mkfs.ext2", "-q"], "ext2", "single-host"),
    "ext3": (["mkfs.ext3", "-q"], "ext3", "single-host"),
    "ext4": (["mkfs.ext4", "-q"], "ext4", "single-host"),
    "xfs": (["mkfs.xfs", "-q"], "xfs", "single-host"),
    "btrfs": (["mkfs.btrfs", "-q"], "btrfs", "single-host"),
    "vfat": (["mkfs.vfat"], "vfat", "single-host"),
    "gfs2-nolock": (["mkfs.gfs2", "-O", "-p", "lock_nolock"], "gfs2", "single-host"),
    "gfs2-dlm": (["mkfs.gfs2", "-O", "-p", "lock_dlm", "-t", "lab:fs", "-j", "2"], "gfs2",
                 "cluster"),
    "ocfs2-local": (["mkfs.ocfs2", "-q", "-F", "-M", "local"], "ocfs2", "single-host"),
    "ocfs2-cluster": (["mkfs.ocfs2", "-q", "-F", "-N", "2", "--cluster-stack=o2cb",
                       "--cluster-name=lab"], "ocfs2", "cluster"),
}


@pytest.mark.parametrize("name", sorted(MKFS))
def test_real_filesystems(tmp_path, name):
    cmd, fstype, verdict = MKFS[name]
    if not shutil.which(cmd[0]):
        pytest.fail(f"{cmd[0]} is missing: scripts/bootstrap.sh installs it")
    img = image(tmp_path, name)
    run(*cmd, img)
    result = fsprobe.probe(img)
    assert (result.filesystem, result.verdict) == (fstype, verdict), result
    # the in-process probe reads what `blkid -p` reads
    fd = os.open(img, os.O_RDONLY)
    try:
        assert libblkid.values(fd) == blkid_p(img)
    finally:
        os.close(fd)


def blkid_p(img) -> dict:
    res = subprocess.run(["blkid", "-p", "-o", "export", img], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in res.stdout.splitlines()
                if "=" in line and not line.startswith("DEVNAME="))


def partitions(img) -> list[tuple[int, int]]:
    """sfdisk's view of the table: the independent account of the offsets."""
    table = json.loads(subprocess.run(["sfdisk", "--json", img], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    return [(p["start"] * 512, p["size"] * 512) for p in table["partitions"]]


def test_two_signatures_are_unknown_not_blank(tmp_path):
    """vfat's boot sector at 0 and ext4's superblock at 1 KiB: `blkid -p` will not
    pick one (ambivalent), and neither does the guard: it cannot say the volume is safe."""
    img = image(tmp_path, "both", 64)
    run("mkfs.ext4", "-q", img)
    vfat = image(tmp_path, "vfat", 64)
    run("mkfs.vfat", vfat)
    with open(vfat, "rb") as src, open(img, "r+b") as dst:
        dst.write(src.read(512))
    assert subprocess.run(["blkid", "-p", img], capture_output=True).returncode == 8
    result = fsprobe.probe(img)
    assert result.verdict == "unknown" and "ambivalent" in result.findings[0].detail


def test_blank_volume(tmp_path):
    assert fsprobe.probe(image(tmp_path, "blank", 16)).verdict == "blank"


def lvm_label(size: int) -> bytes:
    """Sector 1 of an LVM2 PV as pvcreate writes it (pvcreate needs a block device)."""
    body = (struct.pack("<I", 32) + b"LVM2 001" + b"A" * 32 + struct.pack("<Q", size)
            + b"\0" * 48)
    body = body + b"\0" * (512 - 20 - len(body))
    crc = ~zlib.crc32(body, ~0xF597A6CF & 0xFFFFFFFF) & 0xFFFFFFFF  # LVM's CRC-32 variant
    return b"LABELONE" + struct.pack("<QI", 1, crc) + body


def test_lvm_pv_is_reported_as_opaque(tmp_path):
    img = image(tmp_path, "pv", 16)
    with open(img, "r+b") as f:
        f.seek(512)
        f.write(lvm_label(16 * MB))
    result = fsprobe.probe(img)
    assert (result.filesystem, result.verdict) == ("LVM2_member", "opaque")


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_partitioned_volume_is_probed_per_partition(tmp_path, label):
    img = image(tmp_path, f"part-{label}", 400)
    subprocess.run(["sfdisk", "-q", img], input=f"label: {label}\n,100M\n,250M\n", text=True,
                   check=True, capture_output=True)
    parts = partitions(img)
    assert len(parts) == 2
    blank = fsprobe.probe(img)
    assert blank.table == label and blank.verdict == "blank"
    # an ext4 in the second partition, written through an offset copy
    fs = image(tmp_path, "p2fs", 250)
    run("mkfs.ext4", "-q", fs)
    with open(fs, "rb") as src, open(img, "r+b") as dst:
        dst.seek(parts[1][0])
        shutil.copyfileobj(src, dst)
    found = fsprobe.probe(img)
    assert found.verdict == "single-host" and found.filesystem == "ext4"
    assert [f.offset for f in found.findings] == [start for start, _ in parts]
    fd = os.open(img, os.O_RDONLY)
    try:
        assert libblkid.partitions(fd) == parts
    finally:
        os.close(fd)


def test_unreadable_device_is_unknown_not_a_crash(tmp_path):
    result = fsprobe.probe(str(tmp_path / "missing"))
    assert result.verdict == "unknown" and "cannot read" in result.findings[0].detail
