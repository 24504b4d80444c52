"""Live migration as Nova drives it, through the CLI, with real initiators: the
destination host attaches the volume for the same server, both are admitted
until the source's attachment is deleted, and the volume stays in-use."""
import json
import os
import subprocess

import pytest

from shareblock.lab.hosts import Host
from tests.hardware.test_control_plane import shareblock  # noqa: F401  (fixture)

MB = 1 << 20


def types(shareblock, protocol):  # noqa: F811
    proto = "iSCSI" if protocol == "iscsi" else "NVMe-oF"
    plain, shared = f"lm-plain-{protocol}", f"lm-ma-{protocol}"
    shareblock("type-create", plain)
    shareblock("type-key", plain, "set", f"storage_protocol={proto}")
    shareblock("type-create", shared)
    shareblock("type-key", shared, "set", "multiattach=<is> True", f"storage_protocol={proto}")
    return plain, shared


def attach(shareblock, vol, host: Host, server: str, expect=0):  # noqa: F811
    key = "initiator" if host.protocol == "iscsi" else "nqn"
    return shareblock("--show-secrets", "attachment-create", vol, server, "--connect", "true",
                      "--connector", json.dumps({key: host.id, "host": host.id[-8:]}),
                      expect=expect)


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_single_attach_volume_moves_with_its_server(shareblock, protocol, unique):  # noqa: F811
    plain, _ = types(shareblock, protocol)
    vol = shareblock("create", "1", "--volume-type", plain)["id"]
    src, dst, other = (Host(protocol, f"lm-{n}-{unique}") for n in ("src", "dst", "other"))
    try:
        att_src = attach(shareblock, vol, src, "vm-1")
        shareblock("attachment-complete", att_src["id"])
        src.attach(att_src["connection_info"])
        data = os.urandom(MB)
        src.write(data)
        err = attach(shareblock, vol, other, "vm-2", expect=4)
        assert "not multiattach" in err

        att_dst = attach(shareblock, vol, dst, "vm-1")
        assert att_dst["attach_mode"] == "rw"
        assert shareblock("show", vol)["status"] == "in-use"
        dst.attach(att_dst["connection_info"])
        shareblock("attachment-complete", att_dst["id"])
        assert dst.read(MB) == data, "the destination sees what the source wrote"

        src.disconnect()
        shareblock("attachment-delete", att_src["id"])
        shown = shareblock("show", vol)
        assert shown["status"] == "in-use"
        assert [a["id"] for a in shown["attachments"]] == [att_dst["id"]]
        more = os.urandom(MB)
        dst.write(more, 1)
        assert dst.read(MB, 1) == more and dst.read(MB) == data
        attach(shareblock, vol, other, "vm-2", expect=4)
        dst.disconnect()
        shareblock("attachment-delete", att_dst["id"])
    finally:
        for host in (src, dst, other):
            host.cleanup()
    shareblock("delete", vol)


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_multiattach_ext4_migrating_server_is_one_writer(shareblock, protocol, unique):  # noqa: F811
    _, shared = types(shareblock, protocol)
    vol = shareblock("create", "1", "--volume-type", shared)["id"]
    src, dst, other = (Host(protocol, f"lmx-{n}-{unique}") for n in ("src", "dst", "other"))
    mnt = f"/tmp/lm-{unique}"
    os.makedirs(mnt, exist_ok=True)
    try:
        att_src = attach(shareblock, vol, src, "vm-1")
        shareblock("attachment-complete", att_src["id"])
        src.attach(att_src["connection_info"])
        subprocess.run(["mkfs.ext4", "-q", str(src.device())], check=True)
        subprocess.run(["mount", str(src.device()), mnt], check=True)
        with open(f"{mnt}/before", "w") as f:
            f.write("written on the source")
        subprocess.run(["umount", mnt], check=True)  # the source VM pauses, flushed

        att_dst = attach(shareblock, vol, dst, "vm-1")
        assert (att_dst["attach_mode"], att_dst["reason"]) == ("rw", None), \
            "the migrating server is one writer that moves, not a second writer"
        shareblock("attachment-complete", att_dst["id"])
        assert shareblock("guard") == [], "nor does the run-time pass demote it"
        att_other = attach(shareblock, vol, other, "vm-2")
        assert att_other["attach_mode"] == "ro" and "ext4" in att_other["reason"]

        src.disconnect()
        shareblock("attachment-delete", att_src["id"])
        assert shareblock("show", vol)["status"] == "in-use"
        dst.attach(att_dst["connection_info"])
        subprocess.run(["mount", str(dst.device()), mnt], check=True)
        with open(f"{mnt}/before") as f:
            assert f.read() == "written on the source"
        with open(f"{mnt}/after", "w") as f:
            f.write("written on the destination")
            f.flush()
            os.fsync(f.fileno())
        subprocess.run(["umount", mnt], check=True)
        other.attach(att_other["connection_info"])
        assert other.write_fails_at_target(os.urandom(MB), 64), "another server stays guarded"
        for host, att in ((dst, att_dst), (other, att_other)):
            host.disconnect()
            shareblock("attachment-delete", att["id"])
    finally:
        subprocess.run(["umount", mnt], check=False, capture_output=True)
        for host in (src, dst, other):
            host.cleanup()
    shareblock("delete", vol)
