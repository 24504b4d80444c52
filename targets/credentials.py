"""Fresh per-host secrets in the forms the kernels and initiators take."""
import base64
import secrets
import struct
import zlib

from shareblock.targets.base import Credentials


def chap(host_tag: str, mutual: bool = False) -> Credentials:
    """iSCSI CHAP: a user name per host and a random 24-character secret."""
    user = "sb-" + host_tag
    creds = Credentials(user=user, secret=secrets.token_urlsafe(18))
    if mutual:
        creds.mutual_user, creds.mutual_secret = "sb-target", secrets.token_urlsafe(18)
    return creds


def dhchap_secret(length: int = 32) -> str:
    """An NVMe DH-HMAC-CHAP secret: `DHHC-1:00:` + base64(key + CRC-32 LE) + `:`.

    The `00` means the key is used as-is (no hash transform), the form
    `nvme gen-dhchap-key` writes by default; length is 32, 48 or 64 bytes.
    """
    if length not in (32, 48, 64):
        raise ValueError("DH-HMAC-CHAP keys are 32, 48 or 64 bytes")
    key = secrets.token_bytes(length)
    blob = key + struct.pack("<I", zlib.crc32(key) & 0xFFFFFFFF)
    return f"DHHC-1:00:{base64.b64encode(blob).decode()}:"


def dhchap(bidirectional: bool = True) -> Credentials:
    return Credentials(dhchap_key=dhchap_secret(),
                       dhchap_ctrl_key=dhchap_secret() if bidirectional else None)
