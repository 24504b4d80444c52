"""The shared-filesystem guard: read-only before corruption.

A single-host filesystem (ext4, xfs, ...) written by two hosts at once is
corrupted: the seed warns and Cinder does nothing. The guard decides, from what
is on the volume and who writes, which hosts keep `rw`; the target enforces it.
Decisions here are pure; probing and enforcing are the callers'.
"""
import dataclasses

MODES = ("enforce", "warn", "off")


@dataclasses.dataclass
class Decision:
    mode: str               # the mode granted
    action: str             # granted | demoted | warned
    reason: str = ""
    filesystem: str = ""


def guard_mode(extra_specs: dict | None, default: str = "enforce") -> str:
    mode = (extra_specs or {}).get("shareblock:fs_guard") or default
    return mode if mode in MODES else "enforce"


def at_attach(requested: str, other_writers: list[str], verdict: str, filesystem: str,
              mode: str) -> Decision:
    """A host asks for `requested` while `other_writers` (other hosts) hold rw."""
    if requested != "rw" or not other_writers or mode == "off" or verdict != "single-host":
        return Decision(requested, "granted")
    reason = (f"{filesystem} is a single-host filesystem and {other_writers[0]} already "
              f"writes to it")
    if mode == "warn":
        return Decision("rw", "warned", reason + " (guard warn: rw granted anyway)", filesystem)
    return Decision("ro", "demoted", reason + ": granted read-only", filesystem)


def keeper(writers: list[str], writes: dict[str, int | None], order: list[str]) -> str:
    """The writer that keeps rw: the one actually writing (most written, per the
    target's per-host counters), else the earliest attachment."""
    counted = {h: writes.get(h) for h in writers if writes.get(h) is not None}
    if counted and max(counted.values()) > 0:
        top = max(counted.values())
        leaders = [h for h in writers if counted.get(h) == top]
        return min(leaders, key=lambda h: order.index(h) if h in order else len(order))
    return min(writers, key=lambda h: order.index(h) if h in order else len(order))


def at_run_time(writers: list[str], writes: dict[str, int | None], order: list[str],
                verdict: str, filesystem: str, mode: str) -> dict[str, Decision]:
    """Several hosts hold rw and a filesystem may have appeared: who is demoted."""
    if len(writers) < 2 or mode == "off" or verdict != "single-host":
        return {}
    keep = keeper(writers, writes, order)
    out = {}
    for host in writers:
        if host == keep:
            continue
        reason = f"{filesystem} appeared on a volume {keep} writes to"
        out[host] = (Decision("rw", "warned", reason + " (guard warn)", filesystem)
                     if mode == "warn" else
                     Decision("ro", "demoted", reason + ": demoted to read-only", filesystem))
    return out
