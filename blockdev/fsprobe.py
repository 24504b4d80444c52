"""What is on a volume: filesystem signatures, read from the backing device.

libblkid's low-level probe (what `blkid -p` runs, called in process) finds the
signature; a partitioned volume (GPT or MBR) is probed partition by partition at
its offset; for the two cluster filesystems the superblock says whether they are
really shared: gfs2's lock protocol (`lock_nolock` is single-node) and ocfs2's
local-mount feature flag.
"""
import dataclasses
import fcntl
import os
import stat
import struct

from shareblock.blockdev import libblkid

# Filesystems that assume one host owns the block device: a second writer
# corrupts them (the seed's warning).
SINGLE_HOST = {"ext2", "ext3", "ext4", "ext4dev", "jbd", "xfs", "btrfs", "vfat", "exfat",
               "ntfs", "ntfs3", "f2fs", "jfs", "reiserfs", "nilfs2", "hfs", "hfsplus", "udf",
               "minix", "bcachefs", "zfs_member", "erofs", "squashfs", "swap"}
# Signatures that hide what is inside: shareblock cannot say more.
OPAQUE = {"LVM2_member", "crypto_LUKS", "linux_raid_member", "bcache", "drbd",
          "VMFS_volume_member"}
GFS2_SB = 65536
OCFS2_LOCAL_MOUNT = 0x0008


@dataclasses.dataclass
class Finding:
    fstype: str | None     # blkid's TYPE, None when blank
    verdict: str           # single-host | cluster | opaque | blank | unknown
    offset: int = 0        # byte offset of the partition (0: whole volume)
    detail: str = ""


@dataclasses.dataclass
class Probe:
    findings: list[Finding]
    table: str | None = None  # gpt / dos when partitioned

    @property
    def verdict(self) -> str:
        """single-host if anything is, else cluster/opaque/unknown, else blank."""
        verdicts = {f.verdict for f in self.findings}
        for v in ("single-host", "opaque", "unknown", "cluster"):
            if v in verdicts:
                return v
        return "blank"

    @property
    def filesystem(self) -> str:
        names = [f.fstype for f in self.findings if f.fstype]
        return ",".join(names) if names else "none"


def _blkid(fd: int, offset: int = 0, size: int = 0) -> dict:
    try:
        found = libblkid.values(fd, offset, size)
    except OSError as e:
        return {"_ERROR": str(e)}
    if found is None:
        return {"_ERROR": "ambivalent result: several signatures on the device"}
    return found


def _read(device: str, offset: int, length: int) -> bytes:
    with open(device, "rb") as f:
        f.seek(offset)
        return f.read(length)


def classify(device: str, info: dict, offset: int = 0) -> Finding:
    if "_ERROR" in info:
        return Finding(None, "unknown", offset, info["_ERROR"])
    fstype = info.get("TYPE")
    if not fstype:
        return Finding(None, "blank", offset)
    if fstype == "gfs2":
        sb = _read(device, offset + GFS2_SB, 256)
        proto = sb[96:160].split(b"\0")[0].decode(errors="replace")
        verdict = "single-host" if proto in ("lock_nolock", "") else "cluster"
        return Finding(fstype, verdict, offset, f"lock protocol {proto or 'none'}")
    if fstype == "ocfs2":
        return _ocfs2(device, offset)
    if fstype in SINGLE_HOST:
        return Finding(fstype, "single-host", offset)
    if fstype in OPAQUE:
        return Finding(fstype, "opaque", offset, "contents not visible to the guard")
    return Finding(fstype, "unknown", offset, info.get("USAGE", ""))


def _ocfs2(device: str, offset: int) -> Finding:
    data = _read(device, offset, 16384)
    for kib in (1, 2, 4, 8):  # the superblock inode sits at block 2 of 512 B .. 4 KiB blocks
        at = kib * 1024
        if data[at:at + 6] == b"OCFSV2":
            incompat = struct.unpack_from("<I", data, at + 0xC0 + 32)[0]
            if incompat & OCFS2_LOCAL_MOUNT:
                return Finding("ocfs2", "single-host", offset, "local mount (no cluster)")
            return Finding("ocfs2", "cluster", offset, "cluster mount")
    return Finding("ocfs2", "unknown", offset, "superblock not found")


BLKFLSBUF = 0x1261  # <linux/fs.h> _IO(0x12, 97): what `blockdev --flushbufs` calls


def _flush_buffers(fd: int) -> None:
    try:
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    except OSError:
        pass  # not flushable (no CAP_SYS_ADMIN): the read may be cached, the probe still runs


def probe(device: str) -> Probe:
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return Probe([Finding(None, "unknown", 0, f"cannot read {device}: {e.strerror}")])
    try:
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            # Hosts write through the target, beneath this node's page cache: drop what
            # it holds of the device, or an earlier probe's blank superblock is read again.
            _flush_buffers(fd)
        info = _blkid(fd)
        table = info.get("PTTYPE")
        if not table:
            return Probe([classify(device, info)])
        findings = [classify(device, _blkid(fd, start, size), start)
                    for start, size in libblkid.partitions(fd)]
    finally:
        os.close(fd)
    return Probe(findings or [Finding(None, "blank", 0, f"empty {table} table")], table)
