"""`shareblock-restore`: bring this storage node's exports back at boot.

Reads the node's desired state (one document per volume, targets/desired.py),
loads the target modules the documents need, attaches each file-backed
volume's loop device again, and replays every export, ACL, mode and secret
into configfs in one batch per target, with no control plane and no
configuration: each document says all of it. Run by `shareblock-restore.service`
on a local node and on a node reached over SSH alike (there the agent keeps
the documents). Idempotent: a second run changes nothing.
"""
import argparse
import json
import logging
import os
import subprocess
import sys

from shareblock.blockdev import loopdev
from shareblock.targets import desired
from shareblock.targets.base import Desired, TargetError
from shareblock.targets.factory import local_target
from shareblock.targets.names import InvalidName
from shareblock.terminal.progress import Progress, quiet

LOG = logging.getLogger("shareblock.restore")
PROGRESS_CHUNK = 100  # exports restored between two progress reports
MODULES = {"iscsi": ["target_core_mod", "target_core_iblock", "iscsi_target_mod"],
           "nvmet_tcp": ["nvmet", "nvmet_tcp"]}
CONFIGFS = "/sys/kernel/config"


class DeviceMissing(RuntimeError):
    """A volume's block device is not there and nothing can bring it back."""


def load_modules(protocols) -> None:
    """The kernel modules of these transports, and configfs mounted."""
    names = [m for p in sorted(protocols) for m in MODULES[p]]
    if names:
        subprocess.run(["modprobe", "-a", *names], check=True, capture_output=True)
    if not os.path.ismount(CONFIGFS):
        subprocess.run(["mount", "-t", "configfs", "configfs", CONFIGFS], check=True,
                       capture_output=True)


def device_for(want: Desired, loops: dict[str, str]) -> str:
    """The volume's device now: its loop device over the backing file (attached
    again after a reboot), or the device itself (an LVM volume, activated)."""
    if want.backing:
        found = loopdev.find(want.backing, loops)
        if found:
            return found
        if not os.path.exists(want.backing):
            raise DeviceMissing(f"volume {want.volume_id}: backing file {want.backing} "
                                "is gone")
        dev = loopdev.attach(want.backing, direct_io=True)
        loops[os.path.realpath(want.backing)] = dev.rsplit("/", 1)[-1]
        return dev
    if not os.path.exists(want.device):
        parts = want.device.split("/")  # /dev/VG/LV: activate it
        if len(parts) == 4 and parts[1] == "dev":
            subprocess.run(["lvchange", "-ay", f"{parts[2]}/{parts[3]}"], capture_output=True)
        if not os.path.exists(want.device):
            raise DeviceMissing(f"volume {want.volume_id}: device {want.device} is missing")
    return want.device


def _group_of(doc: dict) -> tuple:
    """The target a document belongs to: documents of one target restore in one batch."""
    if doc["protocol"] not in MODULES:
        raise desired.BadDocument(f"volume {doc['volume_id']}: unknown transport "
                                  f"{doc['protocol']!r}")
    try:
        portals = tuple((p["address"], p["port"]) for p in doc["portals"])
    except (KeyError, TypeError):
        raise desired.BadDocument(f"volume {doc['volume_id']}: bad portals "
                                  f"{doc['portals']!r}") from None
    return doc["protocol"], doc["prefix"], portals, tuple(desired.port_ids_of(doc) or ())


def restore(root: str, progress=quiet) -> dict:
    """Replay every document under root. Returns what was restored and what failed.
    `progress(done, total)` hears of each chunk of exports restored."""
    store = desired.DesiredStore(root)
    unreadable: list[str] = []
    docs = store.documents(unreadable=unreadable)
    # one bad document or volume never keeps the others from coming back
    report = {"exports": 0, "hosts": 0,
              "failed": [{"volume_id": None, "error": u} for u in unreadable]}
    groups: dict[tuple, list[dict]] = {}
    for doc in docs:
        try:
            key = _group_of(doc)
        except desired.BadDocument as e:
            report["failed"].append({"volume_id": doc.get("volume_id"), "error": str(e)})
            continue
        groups.setdefault(key, []).append(doc)
    if not groups:
        store.mark_restored(report)
        return report
    loaded: set[str] = set()
    loops = loopdev.attached()
    done = 0
    for (protocol, prefix, _, _), group in groups.items():
        if protocol not in loaded:
            try:  # one transport's missing modules never keep the other's volumes back
                load_modules({protocol})
            except (subprocess.CalledProcessError, OSError) as e:
                report["failed"] += [{"volume_id": d.get("volume_id"),
                                      "error": f"{protocol} modules: {e}"} for d in group]
                continue
            loaded.add(protocol)
        batch = []
        for doc in group:
            try:
                want = Desired.from_dict(doc)
                want.device = device_for(want, loops)
            except (DeviceMissing, OSError, InvalidName, KeyError, TypeError) as e:
                report["failed"].append({"volume_id": doc.get("volume_id"), "error": str(e)})
                continue
            batch.append(want)
        try:
            target = local_target(protocol, desired.portals_of(group[0]), prefix, root,
                                  desired.port_ids_of(group[0]))
        except (InvalidName, TargetError, OSError) as e:
            report["failed"] += [{"volume_id": w.volume_id, "error": str(e)} for w in batch]
            continue
        for start in range(0, len(batch), PROGRESS_CHUNK):
            chunk = batch[start:start + PROGRESS_CHUNK]
            try:
                target.restore(chunk)
            except (InvalidName, TargetError, OSError):
                # the chunk failed somewhere: each volume again on its own (restore
                # is idempotent), so only the volumes at fault are reported
                chunk = _restore_one_by_one(target, chunk, report)
            report["exports"] += len(chunk)
            report["hosts"] += sum(len(w.hosts) for w in chunk)
            done += len(batch[start:start + PROGRESS_CHUNK])
            progress(done, len(docs))
    store.mark_restored(report)
    return report


def _restore_one_by_one(target, batch: list[Desired], report: dict) -> list[Desired]:
    done = []
    for want in batch:
        try:
            target.restore([want])
        except (InvalidName, TargetError, OSError) as e:
            report["failed"].append({"volume_id": want.volume_id, "error": str(e)})
            continue
        done.append(want)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="shareblock-restore", description=__doc__
                                     .split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--state-dir", default=None,
                        help="the node's desired state (default $SHAREBLOCK_NODE_DIR or "
                             f"{desired.DEFAULT_ROOT})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    root = args.state_dir or desired.default_root()
    try:
        with Progress("restore: exports", enabled=None if not args.json else False) as shown:
            report = restore(root, shown)
    except (desired.BadDocument, subprocess.CalledProcessError, OSError) as e:
        print(f"shareblock-restore: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"restored {report['exports']} exports, {report['hosts']} host ACLs from {root}")
        for failed in report["failed"]:
            print(f"  failed: {failed['volume_id'] or 'document'}: {failed['error']}",
                  file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
