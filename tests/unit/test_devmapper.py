"""device-mapper ioctl buffers as <linux/dm-ioctl.h> lays them out, and the order
of calls a view's life makes (the kernel side is exercised by the nvmet hardware
tests)."""
import errno
import os
import struct

import pytest

from shareblock.targets import devmapper
from shareblock.targets.base import TargetError


def test_header_is_the_kernels_struct_dm_ioctl():
    buf = devmapper.pack("sb-vol-1", uuid="SHAREBLOCK-sb-vol-1")
    assert len(buf) == 312  # sizeof(struct dm_ioctl) on every Linux ABI
    assert struct.unpack_from("=3I", buf) == (4, 0, 0)
    h = devmapper.header(buf)
    assert (h["data_size"], h["data_start"], h["target_count"]) == (312, 312, 0)
    assert buf[48:48 + 9] == b"sb-vol-1\0"  # name[128] after the 64-bit dev field
    assert buf[176:176 + 20] == b"SHAREBLOCK-sb-vol-1\0"  # uuid[129]
    # DM_DEV_CREATE = _IOWR(0xfd, 3, struct dm_ioctl), as strace shows dmsetup use it
    assert devmapper._request(3) == 0xC138FD03


def test_table_load_spec_and_status_read_back():
    line = "0 131072 flakey /dev/loop3 0 0 2147483647 1 error_writes"
    buf = devmapper.pack("v", targets=[devmapper._spec(line)])
    h = devmapper.header(buf)
    assert h["target_count"] == 1 and h["data_size"] == len(buf) and len(buf) % 8 == 0
    start, length, status, nxt, ttype = struct.unpack_from("=QQiI16s", buf, 312)
    assert (start, length, ttype.rstrip(b"\0")) == (0, 131072, b"flakey")
    assert nxt % 8 == 0 and 312 + nxt == len(buf)
    assert buf[352:].rstrip(b"\0") == b"/dev/loop3 0 0 2147483647 1 error_writes"
    # the kernel answers TABLE_STATUS in the same layout: read it back
    assert devmapper.unpack_targets(buf) == [(0, 131072, "flakey",
                                              "/dev/loop3 0 0 2147483647 1 error_writes")]
    assert devmapper.mode_of(line) == "ro"
    assert devmapper.mode_of("0 131072 linear 7:3 0") == "rw"


class FakeControl:
    """/dev/mapper/control: devices with a live and an inactive table."""

    def __init__(self, fail_load=False):
        self.devs, self.calls, self.fail_load = {}, [], fail_load

    def __call__(self, cmd, buf, name):
        self.calls.append((cmd, name))
        dev = self.devs.get(name)
        if cmd == devmapper._DEV_CREATE:
            self.devs[name] = {"live": None, "inactive": None}
            struct.pack_into("=Q", buf, 40, (253 << 8) | 7)
        elif dev is None:
            raise devmapper._NoDevice(name)
        elif cmd == devmapper._TABLE_LOAD:
            if self.fail_load:
                raise TargetError("device-mapper v: Invalid argument") from OSError(
                    errno.EINVAL, "Invalid argument")
            dev["inactive"] = devmapper.unpack_targets(buf)
        elif cmd == devmapper._DEV_SUSPEND:
            dev["live"], dev["inactive"] = dev["inactive"] or dev["live"], None
        elif cmd == devmapper._TABLE_STATUS:
            live = dev["live"] or []
            out = devmapper.pack(name, targets=live, size=len(buf))
            struct.pack_into("=Q", out, 40, (253 << 8) | 7)
            buf[:] = out
        elif cmd == devmapper._DEV_REMOVE:
            del self.devs[name]
        return buf


@pytest.fixture
def control(monkeypatch, tmp_path):
    fake = FakeControl()
    monkeypatch.setattr(devmapper, "_ioctl", fake)
    monkeypatch.setattr(devmapper, "sectors", lambda device: 131072)
    monkeypatch.setattr(devmapper.os, "mknod", lambda p, mode, dev: open(p, "w").close())
    monkeypatch.setattr(devmapper, "NODES", str(tmp_path / "nodes"))
    monkeypatch.setattr(devmapper, "_same_device", lambda line, device: line.split()[3] == device)
    return fake


def test_view_created_switched_and_removed(control):
    name = devmapper.ensure("v", "/dev/loop3", "rw")
    assert [c for c, _ in control.calls] == [devmapper._TABLE_STATUS, devmapper._DEV_CREATE,
                                             devmapper._TABLE_LOAD, devmapper._DEV_SUSPEND]
    assert devmapper.mode_of(devmapper.current_table("v")) == "rw"
    control.calls.clear()
    assert devmapper.ensure("v", "/dev/loop3", "rw") == name
    assert [c for c, _ in control.calls] == [devmapper._TABLE_STATUS], "nothing to change"
    devmapper.ensure("v", "/dev/loop3", "ro")
    assert devmapper.mode_of(devmapper.current_table("v")) == "ro"
    devmapper.remove("v")
    devmapper.remove("v")  # idempotent
    assert devmapper.current_table("v") is None and not control.devs


def test_a_refused_table_leaves_no_device(control):
    control.fail_load = True
    with pytest.raises(TargetError, match="Invalid argument"):
        devmapper.ensure("v", "/dev/loop3", "rw")
    assert control.devs == {}


def test_a_view_left_without_a_table_is_completed(control):
    """A crash between create and load leaves a device with no table: ensure()
    loads it instead of failing on 'device exists'."""
    control.devs["v"] = {"live": None, "inactive": None}
    devmapper.ensure("v", "/dev/loop3", "ro")
    assert devmapper._DEV_CREATE not in [c for c, _ in control.calls]
    assert devmapper.mode_of(devmapper.current_table("v")) == "ro"
    assert os.path.exists(devmapper.path("v"))


def test_a_view_of_another_device_is_reloaded_and_its_node_remade(control, tmp_path):
    devmapper.ensure("v", "/dev/loop3", "rw")
    os.unlink(devmapper.path("v"))  # a crash before the node, or a reboot's fresh /dev
    control.calls.clear()
    devmapper.ensure("v", "/dev/loop4", "rw")
    assert devmapper._TABLE_LOAD in [c for c, _ in control.calls]
    assert devmapper.current_table("v").split()[3] == "/dev/loop4"
    assert os.path.exists(devmapper.path("v"))
