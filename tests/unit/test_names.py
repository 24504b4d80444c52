import pytest

from shareblock.targets import names

GOOD_IQNS = ["iqn.1993-08.org.debian:01:abcdef", "iqn.2026-11.io.shareblock:vol-1",
             "iqn.2004-10.com.ubuntu", "eui.0123456789abcdef",
             "naa.60014051234567890123456789abcdef"]
BAD_IQNS = ["", "iqn", "iqn.2026-13.io.x:y", "IQN.2026-11.io.x", "iqn.2026-11.io.x:a/b",
            "iqn.2026-11.io.x:..", "iqn.2026-11.io.x:a b", "iqn.2026-11.io.x:a\n",
            "iqn.2026-11.io.x:\x00", "eui.123", "naa.12", "iqn.2026-11.-bad:x",
            "iqn.2026-11.io.x:" + "a" * 300, None, 42]
GOOD_NQNS = ["nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
             "nqn.2026-11.io.shareblock:vol-1", "nqn.2014-08.org.nvmexpress.discovery:x"]
BAD_NQNS = ["", "nqn.2026-11.io.x", "nqn.2014-08.org.nvmexpress:uuid:nope",
            "nqn.2026-11.io.x:a/b", "nqn.2026-11.io.x:../../etc", "nqn.2026-11.io.x:a b",
            "nqn.2026-11.io.x:" + "a" * 210, "iqn.2026-11.io.x:y", None]


@pytest.mark.parametrize("value", GOOD_IQNS)
def test_good_iqns(value):
    assert names.iqn(value) == value


@pytest.mark.parametrize("value", BAD_IQNS)
def test_bad_iqns(value):
    with pytest.raises(names.InvalidName):
        names.iqn(value)


@pytest.mark.parametrize("value", GOOD_NQNS)
def test_good_nqns(value):
    assert names.nqn(value) == value


@pytest.mark.parametrize("value", BAD_NQNS)
def test_bad_nqns(value):
    with pytest.raises(names.InvalidName):
        names.nqn(value)


def test_nqn_limit_is_223_bytes():
    head = "nqn.2026-11.io.x:"
    assert names.nqn(head + "a" * (223 - len(head)))
    with pytest.raises(names.InvalidName, match="223"):
        names.nqn(head + "a" * (224 - len(head)))


@pytest.mark.parametrize("value", ["..", ".", "a/b", "-x", "", "a" * 64, "x\x7f", "é"])
def test_bad_tokens(value):
    with pytest.raises(names.InvalidName):
        names.token("volume id", value)


def test_secrets_are_never_echoed():
    with pytest.raises(names.InvalidName) as e:
        names.chap_secret("short-pw")
    assert "short-pw" not in str(e.value)
    with pytest.raises(names.InvalidName) as e:
        names.dhchap_key("DHHC-1:05:leak:")
    assert "leak" not in str(e.value)


def test_stable_uuid_is_stable_and_distinct():
    assert names.stable_uuid("a", "b") == names.stable_uuid("a", "b")
    assert names.stable_uuid("a", "b") != names.stable_uuid("a", "c")
