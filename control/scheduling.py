"""Scheduling: which backend takes a volume, as Cinder's filters decide.

A type's `multiattach="<is> True"` needs a backend reporting the capability
(the seed's rule); `volume_backend_name` and `storage_protocol` specs must match;
CapacityFilter's thin-provisioning arithmetic decides room.
"""
import socket

from shareblock.control.errors import ControlError
from shareblock.driver.capabilities import MULTIATTACH_SPEC, is_multiattach, mismatch

__all__ = ["MULTIATTACH_SPEC", "is_multiattach", "no_room", "Scheduling"]


def no_room(pool: dict, size: int) -> str | None:
    """Why the pool cannot take `size` GiB, as Cinder's CapacityFilter decides; None
    if it can. Thin pools over-subscribe up to max_over_subscription_ratio, but a
    full pool takes nothing: its sparse volumes could not be written."""
    total = pool.get("total_capacity_gb", 0)
    free = pool.get("free_capacity_gb", 0) - total * pool.get("reserved_percentage", 0) / 100
    if free <= 0:
        return f"{pool.get('free_capacity_gb', 0)} GiB free"
    if not pool.get("thin_provisioning_support"):
        return None if free >= size else f"{free:.2f} GiB free"
    ratio = pool.get("max_over_subscription_ratio", 1.0)
    provisioned = pool.get("provisioned_capacity_gb", 0)
    if total and (provisioned + size) / total > ratio:
        return f"{provisioned} of {total} GiB provisioned, over-subscription ratio {ratio}"
    if free * ratio < size:
        return f"{free:.2f} GiB free, over-subscription ratio {ratio}"
    return None


class Scheduling:
    def get_pools(self, detail: bool = False) -> list[dict]:
        """Each enabled backend's pools as Cinder's scheduler stats API lists them:
        `name` (host@backend#pool) and, with detail, `capabilities` (the backend's
        stats with the pool's own over them), refreshed now."""
        self.authorize("scheduler_extension:scheduler_stats:get_pools")
        pools = []
        for backend in self.conf.enabled_backends:
            stats = self.driver(backend).get_volume_stats(refresh=True)
            top = {k: v for k, v in stats.items() if k != "pools"}
            for pool in stats.get("pools") or []:
                name = f"{socket.gethostname()}@{backend}#{pool.get('pool_name', backend)}"
                pools.append({"name": name, **({"capabilities": {**top, **pool}}
                                               if detail else {})})
        return pools

    def _fits(self, backend: str, specs: dict) -> str | None:
        """None when the backend satisfies the type's capability specs, else why not."""
        return mismatch(self.driver(backend).get_volume_stats(refresh=True), specs)

    def schedule(self, specs: dict, size: int) -> str:
        reasons, fitting = [], []
        for backend in self.conf.enabled_backends:
            try:
                why = self._fits(backend, specs)
            except Exception as e:  # a broken backend is not a candidate
                why = f"failed: {e}"
            if why:
                reasons.append(f"{backend} {why}")
                continue
            pool = self.driver(backend).get_volume_stats()["pools"][0]
            why = no_room(pool, size)
            if why:
                reasons.append(f"{backend} has no room for {size} GiB ({why})")
                continue
            fitting.append((pool.get("free_capacity_gb", 0), backend))
        if not fitting:
            raise ControlError("no valid backend: " + ("; ".join(reasons) or "none enabled"))
        return max(fitting)[1]
