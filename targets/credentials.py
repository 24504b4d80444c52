"""Per-host secrets in the forms the kernels and initiators take.

Secrets are derived, never drawn at random and kept: each is an HMAC-SHA256 of
(purpose, backend, host) under the backend's secret key. Any node holding the
same key (the same cinder.conf) computes the same secrets, so a volume service
that starts on another node, or loses its state directory, serves every host
with the secrets it already holds; and no store of secrets can be lost.
"""
import base64
import hashlib
import hmac
import secrets
import struct
import zlib

from shareblock.targets import names
from shareblock.targets.base import Credentials

MIN_KEY_BYTES = 16
MUTUAL_USER = "sb-target"


def _hmac(key: bytes, purpose: str, backend: str, host: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a backend secret key has at least {MIN_KEY_BYTES} bytes")
    message = "\0".join((purpose, backend, host)).encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def chap_secret(key: bytes, purpose: str, backend: str, host: str) -> str:
    """24 URL-safe characters: within LIO's CHAP length, and 144 bits."""
    return base64.urlsafe_b64encode(_hmac(key, purpose, backend, host)).decode()[:24]


def dhchap_text(raw: bytes) -> str:
    """An NVMe DH-HMAC-CHAP secret: `DHHC-1:00:` + base64(key + CRC-32 LE) + `:`.

    The `00` means the key is used as-is (no hash transform), the form
    `nvme gen-dhchap-key` writes by default; length is 32, 48 or 64 bytes.
    """
    if len(raw) not in (32, 48, 64):
        raise ValueError("DH-HMAC-CHAP keys are 32, 48 or 64 bytes")
    blob = raw + struct.pack("<I", zlib.crc32(raw) & 0xFFFFFFFF)
    return f"DHHC-1:00:{base64.b64encode(blob).decode()}:"


def chap(key: bytes, backend: str, host: str, mutual: bool = False) -> Credentials:
    """iSCSI CHAP: a user name per host (from its IQN) and its derived secret."""
    creds = Credentials(user="sb-" + names.short_hash(host, 10),
                        secret=chap_secret(key, "chap", backend, host))
    if mutual:
        creds.mutual_user = MUTUAL_USER
        creds.mutual_secret = chap_secret(key, "chap-mutual", backend, host)
    return creds


def dhchap(key: bytes, backend: str, host: str, bidirectional: bool = True) -> Credentials:
    """NVMe DH-HMAC-CHAP: the host's key and (bidirectional) the controller's."""
    return Credentials(
        dhchap_key=dhchap_text(_hmac(key, "dhchap-host", backend, host)),
        dhchap_ctrl_key=dhchap_text(_hmac(key, "dhchap-ctrl", backend, host))
        if bidirectional else None)


def for_host(protocol: str, key: bytes, backend: str, host: str,
             mutual: bool = False) -> Credentials:
    if protocol == "iscsi":
        return chap(key, backend, host, mutual=mutual)
    return dhchap(key, backend, host)


# Random secrets: what a test's host, a benchmark or an impostor holds.
def random_chap(host_tag: str, mutual: bool = False) -> Credentials:
    creds = Credentials(user="sb-" + host_tag, secret=secrets.token_urlsafe(18))
    if mutual:
        creds.mutual_user, creds.mutual_secret = MUTUAL_USER, secrets.token_urlsafe(18)
    return creds


def random_dhchap_secret(length: int = 32) -> str:
    return dhchap_text(secrets.token_bytes(length))


def random_dhchap(bidirectional: bool = True) -> Credentials:
    return Credentials(dhchap_key=random_dhchap_secret(),
                       dhchap_ctrl_key=random_dhchap_secret() if bidirectional else None)
