"""The storage node's desired state: one small document per exported volume.

`<root>/<protocol>/<volume id>.json`, mode 0600 in 0700 folders, saved
crash-safe (see privatefile), never one document for all: a change rewrites
one volume's few hundred bytes, whatever the number of volumes. Each document
is self-contained (transport, prefix, portals, device, backing file, hosts with
modes and credentials; nvmet's port ids), so `shareblock-restore` replays it at boot with no
control plane and no configuration. As nvmetcli's saved config, it is the
target's intent; configfs is brought to it.
"""
import contextlib
import fcntl
import json
import os
import threading
import time
import zlib
from pathlib import Path

from shareblock.targets import names
from shareblock.targets.base import Desired, Portal
from shareblock.targets.privatefile import write_private_json

DEFAULT_ROOT = "/var/lib/shareblock/node"
ROOT_ENV = "SHAREBLOCK_NODE_DIR"
RESTORED = "restored.json"  # beside the protocol folders: never read as a document
LOCK_STRIPES = 64  # lock files per transport: bounded, whatever the number of volumes


class BadDocument(ValueError):
    """A desired-state file that is not a document shareblock wrote."""


def default_root() -> str:
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


class DesiredStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._threads = threading.Lock()
        self._dirs: dict[str, Path] = {}

    def _dir(self, protocol: str) -> Path:
        folder = self._dirs.get(protocol)
        if folder is None:
            folder = self._dirs[protocol] = self.root / names.token("protocol", protocol)
        return folder

    def mark_restored(self, report: dict) -> None:
        """When the node's last boot-time restore ran, and what it brought back (the
        exporter's shareblock_last_restore_timestamp_seconds)."""
        write_private_json(self.root / RESTORED, {
            "at": time.time(), "exports": report.get("exports", 0),
            "hosts": report.get("hosts", 0), "failed": len(report.get("failed", []))})

    def last_restore(self) -> dict | None:
        try:
            return json.loads((self.root / RESTORED).read_text())
        except (OSError, ValueError):
            return None

    def path(self, protocol: str, volume_id: str) -> Path:
        return self._dir(protocol) / f"{names.token('volume id', volume_id)}.json"

    @contextlib.contextmanager
    def locked(self, protocol: str, volume_id: str):
        """One writer of a volume's document at a time, across threads and processes."""
        folder = self._dir(protocol)
        stripe = zlib.crc32(volume_id.encode()) % LOCK_STRIPES
        lock = f"{folder}/.lock-{stripe:02d}"
        with self._threads:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
            except FileNotFoundError:  # the first document of this transport
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def load(self, protocol: str, volume_id: str) -> dict | None:
        try:
            with open(self.path(protocol, volume_id)) as f:
                return self._checked(json.load(f), self.path(protocol, volume_id))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise BadDocument(f"{self.path(protocol, volume_id)}: {e}") from None

    def save(self, protocol: str, prefix: str, portals: list[Portal], desired: Desired,
             port_ids: list[int] | None = None, unless_same: bool = False) -> None:
        """Write the volume's document; `unless_same`: not when the file already
        says exactly this (a batch replaying what is stored writes nothing)."""
        doc = {"protocol": protocol, "prefix": prefix,
               "portals": [{"address": p.address, "port": p.port} for p in portals],
               "port_ids": port_ids, **desired.to_dict(secrets=True)}
        path = self.path(protocol, desired.volume_id)
        if unless_same:
            try:
                if json.loads(path.read_text()) == doc:
                    return
            except (OSError, ValueError):
                pass  # missing or unreadable: written anew
        write_private_json(path, doc)

    def remove(self, protocol: str, volume_id: str) -> None:
        path = self.path(protocol, volume_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        dirfd = os.open(path.parent, os.O_RDONLY)  # the unlink itself made durable
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def documents(self, protocol: str | None = None,
                  unreadable: list | None = None) -> list[dict]:
        """Every document (of one transport), in volume id order. A document that
        cannot be read raises BadDocument, or with `unreadable` (a list) is put
        there (what is wrong with it) and the rest are still read."""
        protocols = [protocol] if protocol else sorted(
            p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        docs = []
        for proto in protocols:
            folder = self._dir(proto)
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                try:
                    docs.append(self._checked(json.loads(path.read_text()), path))
                    continue
                except BadDocument as e:
                    problem = e
                except (ValueError, OSError) as e:
                    problem = BadDocument(f"{path}: {e}")
                if unreadable is None:
                    raise problem
                unreadable.append(str(problem))
        return docs

    @staticmethod
    def _checked(doc, path) -> dict:
        if not isinstance(doc, dict) or not {"protocol", "prefix", "portals", "volume_id",
                                             "device", "hosts"} <= set(doc):
            raise BadDocument(f"{path}: not a shareblock desired-state document")
        return doc


def port_ids_of(doc: dict) -> list[int] | None:
    return doc.get("port_ids") or None


def portals_of(doc: dict) -> list[Portal]:
    return [Portal(p["address"], p["port"]) for p in doc["portals"]]
