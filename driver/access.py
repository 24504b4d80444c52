"""The host-access rule: what one host may do on a volume, from its live attachments.

One function, used by attach, detach and reconcile alike, so a host's mode is
never kept anywhere as a fact of its own: a host is admitted iff it has a live
attachment, and `rw` iff at least one of its live attachments is `rw` (the
guard may still lower that, see `ShareBlockDriver.attach_decision`).
"""
DEAD = ("detached", "deleted")


def field(obj, name, default=None):
    """A field of a Cinder object or of a plain dict."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def live(attachments) -> list:
    return [a for a in attachments or () if field(a, "attach_status", "attached") not in DEAD]


def host_mode(modes) -> str | None:
    """The host's mode from the modes of its live attachments: None (not admitted)
    when it has none, `rw` when any is `rw`, else `ro`."""
    modes = list(modes)
    if not modes:
        return None
    for mode in modes:
        if mode not in ("rw", "ro"):
            raise ValueError(f"attach mode {mode!r} must be rw or ro")
    return "rw" if "rw" in modes else "ro"


def host_modes(attachments, host_of) -> dict[str, str]:
    """Every admitted host's mode, in the order of each host's first live attachment.
    `host_of(attachment)` returns the attachment's host id, or None (not connected)."""
    per_host: dict[str, list[str]] = {}
    for att in live(attachments):
        host = host_of(att)
        if host:
            per_host.setdefault(host, []).append(field(att, "attach_mode") or "rw")
    return {host: host_mode(modes) for host, modes in per_host.items()}
