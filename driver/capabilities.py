"""What a backend honours of a volume type's extra specs: one function, used by
the scheduler (which backend takes a volume) and by the driver's retype (may
the volume keep its backend under the new type). Cinder's capability filter
reads the same specs the same way.
"""
MULTIATTACH_SPEC = "<is> True"


def is_multiattach(extra_specs: dict) -> bool:
    return (extra_specs or {}).get("multiattach") == MULTIATTACH_SPEC


# Every host of a volume in one persistent-reservation domain: a capability the
# backend reports (LIO always; nvmet on kernels with reservations) and a spec a
# volume type asks for, as `shared_reservations='<is> True'`.
SHARED_RESERVATIONS = "shared_reservations"


def shares_reservations(extra_specs: dict) -> bool:
    specs = extra_specs or {}
    req = specs.get(SHARED_RESERVATIONS, specs.get("capabilities:" + SHARED_RESERVATIONS))
    return req is not None and matches(True, req)


# Cinder's extra-spec operators (cinder/scheduler/filters/extra_specs_ops.py)
OPS = {
    "=": lambda v, r: float(v) >= float(r),
    "==": lambda v, r: float(v) == float(r),
    "!=": lambda v, r: float(v) != float(r),
    ">=": lambda v, r: float(v) >= float(r),
    "<=": lambda v, r: float(v) <= float(r),
    "s==": lambda v, r: str(v) == r,
    "s!=": lambda v, r: str(v) != r,
    "<in>": lambda v, r: r in str(v),
    "<is>": lambda v, r: str(v).lower() == r.lower(),
}
# Scoped keys that are not capabilities: read by the driver or by Cinder itself
NOT_CAPABILITIES = ("multiattach", "volume_backend_name", "storage_protocol")


def matches(value, req: str) -> bool:
    """One spec against one reported value, as Cinder's capabilities filter does."""
    words = str(req).split()
    op = words[0] if words else None
    if op == "<or>":
        return str(value) in words[1::2]
    if op not in OPS:
        return str(value) == str(req)
    if value is None or len(words) < 2:
        return False
    try:
        return OPS[op](value, " ".join(words[1:]) if op == "<in>" else words[1])
    except (TypeError, ValueError):
        return False


def mismatch(stats: dict, specs: dict) -> str | None:
    """None when a backend with these stats honours the specs, else why not. As
    Cinder's filters: keys without a scope or scoped `capabilities:` must be
    reported by the backend or its pool and match; other scopes (`shareblock:`,
    `qos:`, ...) are not capabilities."""
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
    for key, req in specs.items():
        scope, _, name = key.rpartition(":")
        if scope not in ("", "capabilities") or name in NOT_CAPABILITIES:
            continue
        value = pool.get(name, stats.get(name))
        if value is None:
            return f"does not report {name}"
        if not matches(value, req):
            return f"reports {name}={value}, not {req}"
    return None
