"""What a backend honours of a volume type's extra specs: one function, used by
the scheduler (which backend takes a volume) and by the driver's retype (may
the volume keep its backend under the new type). Cinder's capability filter
reads the same specs the same way.
"""
MULTIATTACH_SPEC = "<is> True"


def is_multiattach(extra_specs: dict) -> bool:
    return (extra_specs or {}).get("multiattach") == MULTIATTACH_SPEC


def mismatch(stats: dict, specs: dict) -> str | None:
    """None when a backend with these stats honours the specs, else why not."""
    specs = specs or {}
    pool = (stats.get("pools") or [{}])[0]
    if is_multiattach(specs) and not (stats.get("multiattach") and pool.get("multiattach",
                                                                           True)):
        return "does not report the multiattach capability"
    want = specs.get("volume_backend_name")
    if want and want != stats.get("volume_backend_name"):
        return f"is not volume_backend_name {want}"
    proto = specs.get("storage_protocol")
    if proto:
        allowed = [p.strip() for p in proto.removeprefix("<in>").split()]
        if stats.get("storage_protocol") not in allowed:
            return f"speaks {stats.get('storage_protocol')}, not {proto}"
    return None
