"""Derived per-host secrets: the same from the same key on any node, different per
host, backend and key, in the forms LIO and nvmet take."""
import base64
import struct
import zlib

import pytest

from shareblock.driver.secret_key import WeakSecretKey, backend_key
from shareblock.targets import credentials

KEY = b"k" * 32
IQN = "iqn.2026-11.io.test:h1"
NQN = "nqn.2026-11.io.test:h1"


def test_same_key_same_secrets_anywhere():
    assert credentials.chap(KEY, "b1", IQN) == credentials.chap(bytes(KEY), "b1", IQN)
    assert credentials.dhchap(KEY, "b1", NQN) == credentials.dhchap(KEY, "b1", NQN)


@pytest.mark.parametrize("change", [dict(key=b"j" * 32), dict(backend="b2"),
                                    dict(host="iqn.2026-11.io.test:h2")])
def test_secrets_differ_per_key_backend_and_host(change):
    args = {"key": KEY, "backend": "b1", "host": IQN}
    a = credentials.chap(**args, mutual=True)
    b = credentials.chap(**{**args, **change}, mutual=True)
    assert a.secret != b.secret and a.mutual_secret != b.mutual_secret
    assert a.secret != a.mutual_secret


def test_chap_form():
    creds = credentials.chap(KEY, "b1", IQN, mutual=True)
    assert creds.user.startswith("sb-") and len(creds.secret) == 24
    assert creds.mutual_user == "sb-target" and len(creds.mutual_secret) == 24
    assert credentials.chap(KEY, "b1", IQN).mutual_secret is None


def test_dhchap_form_has_the_crc_nvme_cli_checks():
    creds = credentials.dhchap(KEY, "b1", NQN)
    for text in (creds.dhchap_key, creds.dhchap_ctrl_key):
        assert text.startswith("DHHC-1:00:") and text.endswith(":")
        blob = base64.b64decode(text[10:-1])
        key, crc = blob[:-4], struct.unpack("<I", blob[-4:])[0]
        assert len(key) == 32 and crc == zlib.crc32(key)
    assert creds.dhchap_key != creds.dhchap_ctrl_key


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        credentials.chap(b"short", "b1", IQN)


def test_backend_key_configured_generated_and_kept(tmp_path, caplog):
    assert backend_key("x" * 16, str(tmp_path), "b1") == b"x" * 16
    with pytest.raises(WeakSecretKey, match="at least 16"):
        backend_key("x" * 15, str(tmp_path), "b1")
    made = backend_key(None, str(tmp_path / "state"), "b1")
    assert "shareblock_secret_key" in caplog.text and made not in caplog.text.encode()
    assert backend_key(None, str(tmp_path / "state"), "b1") == made, "made once, then read"
    assert backend_key(None, str(tmp_path / "state"), "b2") != made, "one key per backend"
    assert oct((tmp_path / "state" / "b1.key").stat().st_mode & 0o777) == "0o600"
