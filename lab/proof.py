"""The lab's proof of reality: the smallest real LIO and nvmet exports.

Written against rtslib-fb and raw configfs on purpose, independent of
shareblock.targets, so a broken lab is told apart from a broken shareblock.
"""
import contextlib
from pathlib import Path

NVMET = Path("/sys/kernel/config/nvmet")


@contextlib.contextmanager
def lio_export(dev: str, target_iqn: str, name: str, acls: dict[str, tuple[str, str]]):
    """An iSCSI target on 127.0.0.1:3260, CHAP required, one ACL per allowed IQN."""
    from rtslib_fb import (LUN, TPG, BlockStorageObject, FabricModule, MappedLUN,
                           NetworkPortal, NodeACL, Target)
    so = BlockStorageObject(name, dev=dev)
    target = Target(FabricModule("iscsi"), target_iqn)
    try:
        tpg = TPG(target, 1)
        tpg.set_attribute("authentication", "1")
        tpg.set_attribute("generate_node_acls", "0")
        NetworkPortal(tpg, "127.0.0.1", 3260)
        lun = LUN(tpg, 0, so)
        for iqn, (user, password) in acls.items():
            acl = NodeACL(tpg, iqn)
            acl.chap_userid, acl.chap_password = user, password
            MappedLUN(acl, 0, lun)
        tpg.enable = True
        yield target
    finally:
        target.delete()
        so.delete()


@contextlib.contextmanager
def nvmet_export(dev: str, nqn: str, hosts: list[str], port_id: int, trsvcid: int = 4420):
    """An NVMe/TCP subsystem on 127.0.0.1, open only to the listed host NQNs."""
    subsys = NVMET / "subsystems" / nqn
    ns = subsys / "namespaces" / "1"
    port = NVMET / "ports" / str(port_id)
    undo = []
    try:
        subsys.mkdir()
        undo.append(subsys.rmdir)
        (subsys / "attr_allow_any_host").write_text("0")
        ns.mkdir()
        undo.append(ns.rmdir)
        (ns / "device_path").write_text(dev)
        (ns / "enable").write_text("1")
        undo.append(lambda: (ns / "enable").write_text("0"))
        for host in hosts:
            hostdir = NVMET / "hosts" / host
            hostdir.mkdir()
            undo.append(hostdir.rmdir)
            (subsys / "allowed_hosts" / host).symlink_to(hostdir)
            undo.append((subsys / "allowed_hosts" / host).unlink)
        port.mkdir()
        undo.append(port.rmdir)
        for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                            ("addr_traddr", "127.0.0.1"), ("addr_trsvcid", str(trsvcid))):
            (port / attr).write_text(value)
        (port / "subsystems" / nqn).symlink_to(subsys)
        undo.append((port / "subsystems" / nqn).unlink)
        yield subsys
    finally:
        for step in reversed(undo):
            step()
