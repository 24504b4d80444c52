"""libblkid's low-level probe, called in process (ctypes) instead of a `blkid -p` run.

The same library and the same probing `blkid -p` does (superblocks with their
type and usage, partition tables with entry details), minus a process per probe:
a guard pass probes every multiattach volume, and under load a process costs
more than the probe.
"""
import ctypes
import ctypes.util

_lib = ctypes.CDLL(ctypes.util.find_library("blkid") or "libblkid.so.1", use_errno=True)

_probe_t = ctypes.c_void_p
_loff_t = ctypes.c_int64
for name, restype, argtypes in (
        ("blkid_new_probe", _probe_t, []),
        ("blkid_free_probe", None, [_probe_t]),
        ("blkid_probe_set_device", ctypes.c_int, [_probe_t, ctypes.c_int, _loff_t, _loff_t]),
        ("blkid_probe_enable_superblocks", ctypes.c_int, [_probe_t, ctypes.c_int]),
        ("blkid_probe_set_superblocks_flags", ctypes.c_int, [_probe_t, ctypes.c_int]),
        ("blkid_probe_enable_partitions", ctypes.c_int, [_probe_t, ctypes.c_int]),
        ("blkid_probe_set_partitions_flags", ctypes.c_int, [_probe_t, ctypes.c_int]),
        ("blkid_do_safeprobe", ctypes.c_int, [_probe_t]),
        ("blkid_probe_numof_values", ctypes.c_int, [_probe_t]),
        ("blkid_probe_get_value", ctypes.c_int,
         [_probe_t, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
          ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]),
        ("blkid_probe_get_partitions", ctypes.c_void_p, [_probe_t]),
        ("blkid_partlist_numof_partitions", ctypes.c_int, [ctypes.c_void_p]),
        ("blkid_partlist_get_partition", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
        ("blkid_partition_get_start", _loff_t, [ctypes.c_void_p]),
        ("blkid_partition_get_size", _loff_t, [ctypes.c_void_p])):
    fn = getattr(_lib, name)
    fn.restype, fn.argtypes = restype, argtypes

# <blkid/blkid.h> flags, what `blkid -p` asks for: LABEL, UUID, TYPE, SECTYPE, USAGE,
# VERSION of a superblock; the partition table's entry details.
SUBLKS = (1 << 1) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
PARTS_ENTRY_DETAILS = 1 << 2
SECTOR = 512  # libblkid gives partition start and size in 512-byte sectors


class ProbeError(OSError):
    pass


class _Probe:
    def __init__(self, fd: int, offset: int, size: int):
        self.pr = _lib.blkid_new_probe()
        if not self.pr:
            raise ProbeError("libblkid: cannot allocate a probe")
        if _lib.blkid_probe_set_device(self.pr, fd, offset, size) != 0:
            self.close()
            raise ProbeError(f"libblkid: cannot probe at offset {offset}")

    def close(self):
        _lib.blkid_free_probe(self.pr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def values(fd: int, offset: int = 0, size: int = 0) -> dict | None:
    """The NAME=value pairs `blkid -p -o export` prints for the device open as `fd`
    (size 0: to its end); {} when nothing is found, None when the result is
    ambivalent (several signatures: `blkid -p` refuses to pick one too)."""
    with _Probe(fd, offset, size) as p:
        _lib.blkid_probe_enable_superblocks(p.pr, 1)
        _lib.blkid_probe_set_superblocks_flags(p.pr, SUBLKS)
        _lib.blkid_probe_enable_partitions(p.pr, 1)
        _lib.blkid_probe_set_partitions_flags(p.pr, PARTS_ENTRY_DETAILS)
        rc = _lib.blkid_do_safeprobe(p.pr)
        if rc == -2:
            return None
        if rc < 0:
            raise ProbeError(ctypes.get_errno(), "libblkid: probe failed")
        if rc == 1:
            return {}
        out = {}
        name, data, length = ctypes.c_char_p(), ctypes.c_char_p(), ctypes.c_size_t()
        for i in range(_lib.blkid_probe_numof_values(p.pr)):
            if _lib.blkid_probe_get_value(p.pr, i, ctypes.byref(name), ctypes.byref(data),
                                          ctypes.byref(length)) == 0:
                # data is NUL-terminated and length counts the NUL
                out[name.value.decode()] = data.value.decode(errors="replace")
        return out


def partitions(fd: int) -> list[tuple[int, int]]:
    """(start, size) in bytes of each partition in the device's table."""
    with _Probe(fd, 0, 0) as p:
        _lib.blkid_probe_enable_partitions(p.pr, 1)
        ls = _lib.blkid_probe_get_partitions(p.pr)
        if not ls:
            return []
        parts = (_lib.blkid_partlist_get_partition(ls, i)
                 for i in range(_lib.blkid_partlist_numof_partitions(ls)))
        return [(_lib.blkid_partition_get_start(par) * SECTOR,
                 _lib.blkid_partition_get_size(par) * SECTOR)
                for par in parts if par and _lib.blkid_partition_get_size(par) > 0]
