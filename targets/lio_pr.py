"""SCSI-3 persistent reservations as LIO holds them: its APTPL records, replayed
at export, and the kernel's view of a volume's reservation, read from configfs.

LIO emulates PR per backstore. When a host registers with APTPL (Activate
Persist Through Power Loss), the kernel writes every registration and the
reservation to `<dbroot>/pr/aptpl_<unit serial>` on each change, but never reads
that file back. The device's `pr/res_aptpl_metadata` takes one record per write,
only while no LUN links the device; the kernel holds each record as a
pre-registration and makes it live when an ACL with a matching mapped LUN
appears (initiator IQN, mapped LUN, target IQN, TPG tag and LUN must all match).
Without `<dbroot>/pr`, every PR REGISTER fails (the kernel does not make it).

A host's ACL removed frees its registrations (and a reservation it held), but
the kernel does not rewrite the file then: the replay takes only the records of
the hosts the export is about to admit, when the caller says which.
"""
import logging
import os

from shareblock.targets.configfs import ConfigfsError, Node

LOG = logging.getLogger("shareblock.targets")

FILE_PREFIX = "aptpl_"
# `res_pr_type`'s names (core_scsi3_pr_dump_type) and the SPC-4 type codes
TYPES = {
    "Write Exclusive Access": 1,
    "Exclusive Access": 3,
    "Write Exclusive Access, Registrants Only": 5,
    "Exclusive Access, Registrants Only": 6,
    "Write Exclusive Access, All Registrants": 7,
    "Exclusive Access, All Registrants": 8,
}


# dbroot: /etc/target when it existed at target_core_mod's load, else /var/target;
# rtslib-fb moves it to /etc/target, Debian's rtslib-fb to /etc/rtslib-fb-target.
# The kernel takes a new dbroot only while no backstore exists.
DBROOT = "/etc/target"
KNOWN_DBROOTS = (DBROOT, "/var/target", "/etc/rtslib-fb-target")


def folder(root: Node) -> str | None:
    """`<dbroot>/pr`, where the kernel writes APTPL records now; None without
    target_core_mod's `dbroot`."""
    dbroot = root.read("dbroot")
    return os.path.join(dbroot, "pr") if dbroot else None


def ensure_folder(root: Node) -> str | None:
    """dbroot made /etc/target while no backstore exists (the same folder at every
    boot, whatever existed when the module loaded), and its `pr` folder made."""
    if root.read("dbroot") not in (None, DBROOT):
        try:
            os.makedirs(DBROOT, mode=0o755, exist_ok=True)
            root.write("dbroot", DBROOT, check=False)
        except (OSError, ConfigfsError):
            pass  # a backstore exists (an admin's, or ours): the kernel keeps its dbroot
    path = folder(root)
    if path:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:  # exports still work; hosts' PR registrations will not
            LOG.warning("cannot make %s for LIO's persistent reservations: %s", path, e)
    return path


def file_of(root: Node, unit_serial: str) -> str | None:
    """The volume's APTPL file: in today's dbroot, or where the kernel wrote it
    under another dbroot (a boot before this one), the newest."""
    here = folder(root)
    if here is None:
        return None
    name = FILE_PREFIX + unit_serial
    found = [p for p in {os.path.join(here, name), *(os.path.join(d, "pr", name)
                                                     for d in KNOWN_DBROOTS)}
             if os.path.exists(p)]
    return max(found, key=os.path.getmtime) if found else os.path.join(here, name)


def records(text: str) -> list[dict[str, str]]:
    """The registrations of an APTPL file, each as its `key=value` fields in order."""
    found, current = [], None
    for line in text.replace("\0", "").splitlines():
        line = line.strip()
        if line.startswith("PR_REG_START:"):
            current = {}
        elif line.startswith("PR_REG_END:"):
            if current is not None:
                found.append(current)
            current = None
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key] = value
    return found


def metadata_line(record: dict[str, str]) -> str:
    """One record as `res_aptpl_metadata` takes it. The kernel writes `res_type` as
    two hex digits but parses it as a C integer, where `08` is bad octal and type 8
    would be dropped: written back in decimal."""
    fields = dict(record)
    if "res_type" in fields:
        fields["res_type"] = str(int(fields["res_type"], 16))
    return ",".join(f"{k}={v}" for k, v in fields.items())


def replay(device: Node, path: str, hosts=None) -> int:
    """Write the file's records into the device (not yet linked to any LUN), each
    once; only those of `hosts` when given. Returns how many were written."""
    if path is None:
        return 0
    try:
        with open(path) as f:
            found = records(f.read())
    except FileNotFoundError:
        return 0
    written = 0
    for record in found:
        if hosts is not None and record.get("initiator_node") not in hosts:
            continue
        try:
            device.write("pr/res_aptpl_metadata", metadata_line(record), check=False)
        except (ConfigfsError, ValueError) as e:  # a record the kernel refuses: not the export
            LOG.warning("APTPL record of %s not replayed: %s",
                        record.get("initiator_node"), e)
            continue
        written += 1
    return written


def forget(root: Node, unit_serial: str) -> None:
    """The device is gone (no host reaches it): so are its registrations."""
    if folder(root) is None:
        return
    name = FILE_PREFIX + unit_serial
    for path in {os.path.join(folder(root), name),
                 *(os.path.join(d, "pr", name) for d in KNOWN_DBROOTS)}:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def view(device: Node) -> dict:
    """The reservation the kernel holds on this device: the holder, the type, the
    registered initiators with their keys, and whether APTPL is active."""
    holder_line = device.read("pr/res_holder") or ""
    holder = None
    if holder_line.startswith("SPC-3 Reservation:") and "Initiator:" in holder_line:
        holder = _port(holder_line.split("Initiator:", 1)[1].strip())
    type_line = device.read("pr/res_pr_type") or ""
    type_name = type_line.split("Type:", 1)[1].strip() if "Type:" in type_line else None
    registrations = []
    for line in (device.read("pr/res_pr_registered_i_pts") or "").splitlines():
        if " Node: " not in line or " Key: " not in line:
            continue
        port, rest = line.split(" Node: ", 1)[1].split(" Key: ", 1)
        key = rest.split()[0]
        registrations.append({**_port(port.strip()), "key": key})
    if holder is not None:
        for reg in registrations:
            if reg["host"] == holder["host"] and reg["isid"] == holder["isid"]:
                holder["key"] = reg["key"]
    generation = device.read("pr/res_pr_generation")
    return {
        "holder": holder,
        "type": TYPES.get(type_name) if type_name else None,
        "type_name": type_name,
        "registrations": registrations,
        "aptpl": (device.read("pr/res_aptpl_active") or "").endswith("Activated"),
        "generation": int(generation, 16) if generation else None,
    }


def _port(text: str) -> dict:
    """`iqn...,i,0x00023d000001` (an initiator port: its name and ISID, written as
    the APTPL file writes it: 12 hex digits)."""
    host, _, isid = text.partition(",i,")
    return {"host": host, "isid": isid.removeprefix("0x") or None}
