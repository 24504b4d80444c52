"""Identifiers that end up in configfs paths: validated before any path is built.

A value that fails here is a clear error and nothing was touched. Rules:
IQN and EUI/NAA forms of RFC 3720/3721, NQN forms of the NVMe base spec (at
most 223 bytes), and for everything else a conservative token. None of them can
hold '/', '..', whitespace or control characters, so no name escapes its folder.
"""
import hashlib
import re
import uuid

IQN_RE = re.compile(r"^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[a-z0-9.:_-]+)?$")
EUI_RE = re.compile(r"^eui\.[0-9a-f]{16}$")
NAA_RE = re.compile(r"^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$")
NQN_RE = re.compile(r"^nqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*:[\x21-\x7e]+$", re.IGNORECASE)
NQN_UUID_RE = re.compile(r"^nqn\.2014-08\.org\.nvmexpress:uuid:"
                         r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                         re.IGNORECASE)
TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CHAP_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$")
CHAP_SECRET_RE = re.compile(r"^[\x21-\x7e]{12,255}$")
DHCHAP_RE = re.compile(r"^DHHC-1:0[0-3]:[A-Za-z0-9+/]{44,}={0,2}:$")
NVME_MAX_NQN = 223
ISCSI_MAX_NAME = 223


class InvalidName(ValueError):
    """An identifier that must not reach configfs."""


PRINTABLE_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no space, control, non-ASCII


def _common(kind: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{kind} must be a non-empty string, got {value!r}")
    if not PRINTABLE_RE.fullmatch(value):
        raise InvalidName(f"{kind} {value!r} has whitespace, control or non-ASCII characters")
    if "/" in value or ".." in value:
        raise InvalidName(f"{kind} {value!r} could escape its configfs folder")
    return value


def iqn(value) -> str:
    """An iSCSI name: iqn., eui. or naa. form, lower case (RFC 3720 3.2.6)."""
    _common("iSCSI name", value)
    if len(value.encode()) > ISCSI_MAX_NAME:
        raise InvalidName(f"iSCSI name is longer than {ISCSI_MAX_NAME} bytes")
    if not (IQN_RE.match(value) or EUI_RE.match(value) or NAA_RE.match(value)):
        raise InvalidName(f"{value!r} is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id], "
                          "eui.<16 hex>, naa.<16|32 hex>, lower case)")
    return value


def nqn(value) -> str:
    """An NVMe Qualified Name (NVMe base spec 4.7): nqn.YYYY-MM.domain:id or the uuid form."""
    _common("NQN", value)
    if len(value.encode()) > NVME_MAX_NQN:
        raise InvalidName(f"NQN is longer than {NVME_MAX_NQN} bytes")
    if value.startswith("nqn.2014-08.org.nvmexpress:uuid:"):
        if not NQN_UUID_RE.match(value):
            raise InvalidName(f"{value!r} is not a valid uuid-form NQN")
        return value
    if not NQN_RE.match(value):
        raise InvalidName(f"{value!r} is not an NQN (nqn.YYYY-MM.reversed.domain:identifier)")
    return value


def token(kind: str, value) -> str:
    """A plain name (volume id, backstore, pool): letters, digits, '.', '_', '-'."""
    _common(kind, value)
    if not TOKEN_RE.match(value):
        raise InvalidName(f"{kind} {value!r} must be 1-63 of A-Z a-z 0-9 . _ - "
                          "and start with a letter or digit")
    return value


def volume_token(value) -> str:
    """A volume id inside a target IQN or subsystem NQN: a token in lower case only.

    IQNs are lower case, so the id cannot keep its case there; two ids differing
    only in case would share one target and each other's hosts. Cinder's and the
    control plane's ids are lower-case uuids.
    """
    token("volume id", value)
    if value != value.lower():
        raise InvalidName(f"volume id {value!r} must be lower case (it names a target)")
    return value


def chap_user(value) -> str:
    _common("CHAP user name", value)
    # never a path, but held to the rule every name here keeps: no "." or ".."
    if not CHAP_USER_RE.match(value) or ".." in value:
        raise InvalidName("CHAP user name must be 1-255 of A-Z a-z 0-9 . _ : @ -, start "
                          "with a letter or digit and have no '..'")
    return value


def chap_secret(value) -> str:
    """A CHAP secret: 12-255 printable characters (never echoed in the error)."""
    if not isinstance(value, str) or not CHAP_SECRET_RE.match(value):
        raise InvalidName("CHAP secret must be 12 to 255 printable ASCII characters")
    return value


def dhchap_key(value) -> str:
    """A DH-HMAC-CHAP secret in its transport form `DHHC-1:0X:<base64>:` (not echoed)."""
    if not isinstance(value, str) or not DHCHAP_RE.match(value):
        raise InvalidName("DH-HMAC-CHAP key must look like DHHC-1:0X:<base64>:")
    return value


def stable_uuid(*parts: str) -> str:
    """A uuid that is the same every time for the same parts (namespace ids, serials)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "shareblock:" + ":".join(parts)))


SHORT_HASH = 12


def short_hash(value: str, length: int = SHORT_HASH) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]
