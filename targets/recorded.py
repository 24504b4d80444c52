"""A kernel target that keeps the node's desired state (targets/desired.py).

Every change is written to the volume's document first, then made in configfs:
a crash between the two leaves the document ahead, and the next restore or
apply brings configfs to it. A change the kernel refuses (bad input, a failed
write) puts the document back as it was, so a refusal changes nothing.
"""
import dataclasses

from shareblock.targets import crashpoints, names
from shareblock.targets.base import (Credentials, Desired, HostAccess, NotFound, Target,
                                     TargetError)
from shareblock.targets.desired import DesiredStore


class RecordedTarget(Target):
    def __init__(self, kernel: Target, store: DesiredStore):
        super().__init__(kernel.portals, kernel.prefix)
        self.kernel = kernel
        self.store = store
        self.protocol = kernel.protocol

    def __getattr__(self, name):
        """Names and paths (tpg, root, dm, ...) are the kernel target's."""
        if name == "kernel":  # not set yet (copy, unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.kernel, name)

    # --- the document -----------------------------------------------------------
    def _load(self, volume_id: str) -> Desired | None:
        doc = self.store.load(self.protocol, volume_id)
        return Desired.from_dict(doc) if doc else None

    def _save(self, desired: Desired | None, volume_id: str, unless_same=False) -> None:
        if desired is None:
            self.store.remove(self.protocol, volume_id)
        else:
            ids = getattr(self.kernel, "port_ids", None)  # nvmet's own ports
            self.store.save(self.protocol, self.prefix, self.portals, desired,
                            [ids[p] for p in self.portals] if ids else None, unless_same)

    def _change(self, volume_id: str, change, act):
        """Write change(document) first, then act() on configfs; a refusal by the
        kernel puts the document back."""
        with self.store.locked(self.protocol, volume_id):
            before = self._load(volume_id)
            after = change(dataclasses.replace(before, hosts=[
                dataclasses.replace(a) for a in before.hosts]) if before else None)
            if after == before:  # the document already says so: only configfs to check
                return act()
            self._save(after, volume_id)
            crashpoints.reached("desired")
            try:
                return act()
            except (names.InvalidName, TargetError):
                self._save(before, volume_id)
                raise

    # --- operations ---------------------------------------------------------------
    def check_host(self, host: str) -> str:
        return self.kernel.check_host(host)

    def export(self, volume_id, device, backing=None, hosts=None, shared_reservations=False):
        def change(doc):
            if doc is None:
                return Desired(volume_id, device, [], backing,
                               shared_reservations=shared_reservations)
            doc.device = device
            doc.backing = backing if backing is not None else doc.backing
            doc.shared_reservations = shared_reservations
            return doc
        self._change(volume_id, change, lambda: self.kernel.export(
            volume_id, device, backing, hosts=hosts, shared_reservations=shared_reservations))

    def unexport(self, volume_id):
        self._change(volume_id, lambda doc: None, lambda: self.kernel.unexport(volume_id))

    def admit(self, volume_id, host, mode, credentials: Credentials):
        self.kernel.check_host(host)
        self.check_mode(mode)

        def change(doc):
            if doc is None:
                raise NotFound(f"volume {volume_id} is not exported")
            doc.hosts = [a for a in doc.hosts if a.host != host]
            doc.hosts.append(HostAccess(host, mode, credentials))
            return doc
        return self._change(volume_id, change,
                            lambda: self.kernel.admit(volume_id, host, mode, credentials))

    def set_mode(self, volume_id, host, mode):
        self.check_mode(mode)

        def change(doc):
            access = doc.host(host) if doc else None
            if access is not None:
                access.mode = mode
            return doc
        self._change(volume_id, change, lambda: self.kernel.set_mode(volume_id, host, mode))

    def revoke(self, volume_id, host):
        def change(doc):
            if doc is not None:
                doc.hosts = [a for a in doc.hosts if a.host != host]
            return doc
        self._change(volume_id, change, lambda: self.kernel.revoke(volume_id, host))

    def connection(self, volume_id, host):
        return self.kernel.connection(volume_id, host)

    def actual(self, volume_id=None, hosts_only=False):
        return self.kernel.actual(volume_id, hosts_only)

    def modes(self, volume_id):
        return self.kernel.modes(volume_id)

    def probe(self, device):
        return self.kernel.probe(device)

    def reservations(self, volume_id):
        return self.kernel.reservations(volume_id)

    def shares_reservations(self):
        return self.kernel.shares_reservations()

    def last_restore(self):
        return self.store.last_restore()

    # --- batches --------------------------------------------------------------------
    def _record_all(self, desired: list[Desired]) -> None:
        for want in desired:
            with self.store.locked(self.protocol, want.volume_id):
                self._save(want, want.volume_id, unless_same=True)
        crashpoints.reached("desired")

    def restore(self, desired: list[Desired]) -> None:
        """Record every document, then replay them into configfs in one batch."""
        self._record_all(desired)
        self.kernel.restore(desired)

    def apply(self, desired: list[Desired]) -> None:
        """Record every document, then converge configfs on them in one batch."""
        self._record_all(desired)
        self.kernel.apply(desired)

    def desired(self, volume_id=None):
        if volume_id is not None:
            doc = self.store.load(self.protocol, volume_id)
            docs = [doc] if doc else []
        else:
            docs = self.store.documents(self.protocol)
        return {d["volume_id"]: Desired.from_dict(d) for d in docs
                if d["prefix"] == self.prefix}
