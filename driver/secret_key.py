"""The backend's secret key, from which every host's credentials are derived.

Set `shareblock_secret_key` in the backend's section (the same on every node
that may run the volume service) and any node serves the same hosts with the
same secrets. Unset, a random key is made once in the state directory (0600),
and only that node's volume service can serve those hosts: a warning says so.
"""
import logging
import os
import secrets
from pathlib import Path

from shareblock.targets.credentials import MIN_KEY_BYTES

LOG = logging.getLogger("shareblock.driver")


class WeakSecretKey(ValueError):
    """shareblock_secret_key is too short to derive secrets from."""


def backend_key(configured: str | None, state_dir: str, backend: str) -> bytes:
    if configured:
        key = configured.encode()
        if len(key) < MIN_KEY_BYTES:
            raise WeakSecretKey(f"shareblock_secret_key of backend {backend} has "
                                f"{len(key)} bytes: at least {MIN_KEY_BYTES} are needed")
        return key
    path = Path(state_dir) / f"{backend}.key"
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:  # O_EXCL: of two starting services, one makes the key, both read it
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return backend_key(None, state_dir, backend)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        key = path.read_bytes().strip()
        LOG.warning("backend %s: no shareblock_secret_key is set; made one in %s. Set "
                    "shareblock_secret_key so that another node's volume service serves "
                    "these hosts with the same secrets", backend, path)
    if len(key) < MIN_KEY_BYTES:
        raise WeakSecretKey(f"{path} holds {len(key)} bytes: at least {MIN_KEY_BYTES} "
                            "are needed")
    return key
