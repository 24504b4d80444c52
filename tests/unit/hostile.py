"""Hostile inputs for the property tests, and a tally of how many were tried.

The profiles keep the unit suite seconds-fast by default ("quick"); the
reliability run (`SHAREBLOCK_RELIABILITY=full`) tries 20 times as many.
"""
import functools
import os
import string

import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import UnsatisfiedAssumption

# hypothesis keeps small caches on disk: not in the checkout
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "shareblock-hypothesis"))


MODE = os.environ.get("SHAREBLOCK_RELIABILITY", "quick")
QUICK_EXAMPLES = 25
settings.register_profile(
    "quick", max_examples=QUICK_EXAMPLES, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much])
settings.register_profile(
    "full", parent=settings.get_profile("quick"), max_examples=20 * QUICK_EXAMPLES,
    derandomize=False)  # quick is the same every run (CI); full explores anew
settings.load_profile("full" if MODE == "full" else "quick")

# scenario -> [tried, lost]; written to the reliability report at session end
TALLY: dict[str, list[int]] = {}


def counted(fn):
    """Count every input the property test body runs with, and those it failed on."""
    entry = TALLY.setdefault(fn.__name__, [0, 0])

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        entry[0] += 1
        try:
            return fn(*args, **kwargs)
        except UnsatisfiedAssumption:  # assume() discarded it: not an input tried
            entry[0] -= 1
            raise
        except BaseException:
            entry[1] += 1
            raise
    return wrapper


# --- strategies ---------------------------------------------------------------------
NASTY = [
    "", ".", "..", "/", "../x", "a/b", "x/..", "../../../../etc/passwd", "a..b",
    "-rf", "--help", "--config=/tmp/x", "$(reboot)", "`id`", "a;rm -rf /", "a|b", "a&&b",
    "a b", "a\tb", "a\nb", "a\x00b", "\x7f", "é", "ünïcödé", "\u202e", "x" * 64, "x" * 300,
    "iqn.2026-11.io.test:h/../../x", "iqn.2026-11.io.test:h\n", "iqn.2026-11.io.test:h..x",
    "IQN.2026-11.IO.TEST:H", "iqn.2026-13.io.test:h", "iqn.2026-11.io.test:" + "a" * 300,
    "nqn.2014-08.org.nvmexpress:uuid:../..", "nqn.2026-11.io.test:h/x",
    "nqn.2026-11.io.test:" + "a" * 300, "nqn.2026-11.io.test:$(reboot)",
    "eui.02004567A425678D", "naa.52004567ba64678", "DHHC-1:00:../..:", "*", "?", "~root",
    "vol-1/../vol-2", "Vol-1", "VOL-1", "%2e%2e%2f",
]
# domain labels begin and end alphanumeric (RFC 1035); ".." is refused anywhere, as
# a configfs name's guard
VALID_IQN = st.from_regex(r"\Aiqn\.20[0-9]{2}-(0[1-9]|1[0-2])\.[a-z0-9]{1,8}(\.[a-z0-9]"
                          r"([a-z0-9-]{0,5}[a-z0-9])?)?:[a-z0-9.:_-]{1,20}\Z"
                          ).filter(lambda s: ".." not in s)
VALID_EUI = st.from_regex(r"\Aeui\.[0-9a-f]{16}\Z")
VALID_NAA = st.from_regex(r"\Anaa\.([0-9a-f]{16}|[0-9a-f]{32})\Z")
VALID_NQN = st.one_of(
    st.from_regex(r"\Anqn\.20[0-9]{2}-(0[1-9]|1[0-2])\.[a-z0-9]{1,8}\.[a-z0-9]{1,8}"
                  r":[\x21-\x2e\x30-\x7e]{1,30}\Z").filter(lambda s: ".." not in s),
    st.uuids().map(lambda u: f"nqn.2014-08.org.nvmexpress:uuid:{u}"))
VALID_TOKEN = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,30}\Z").filter(lambda s: ".." not in s)
PRINTABLE = st.text(alphabet=string.printable, max_size=80)


@functools.cache
def mutated(valid):
    """A valid name with something hostile spliced in somewhere."""
    return st.tuples(valid, st.sampled_from(NASTY + list("/.\\ \n\t\x00$`;'\"")),
                     st.integers(0, 100)).map(lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:])


@functools.cache  # built once: building strategies costs more than running them
def text_input():
    """Any string a caller could pass: valid, nearly valid, hostile or random."""
    return st.one_of(st.sampled_from(NASTY), PRINTABLE, st.text(max_size=40),
                     VALID_IQN, VALID_NQN, VALID_TOKEN, mutated(VALID_IQN), mutated(VALID_NQN),
                     mutated(VALID_TOKEN))


@functools.cache
def json_value(leaf=None):
    """Anything JSON can carry (what the CLI's --connector or a remote request holds)."""
    leaf = leaf or st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                             text_input())
    return st.recursive(leaf, lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(text_input(), kids, max_size=3)),
        max_leaves=8)


@functools.cache
def any_input():
    """Strings, plus the wrong types a JSON or Python caller could pass instead."""
    return st.one_of(text_input(), st.none(), st.integers(), st.booleans(),
                     st.lists(st.text(max_size=5), max_size=2),
                     st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))


@functools.cache
def connector():
    """Connector dicts: the right keys with valid or hostile values, and junk keys."""
    host_value = st.one_of(VALID_IQN, VALID_NQN, json_value())
    keys = st.sampled_from(["initiator", "nqn", "host", "mode", "attach_mode", "platform",
                            "multipath", "os_type", "uuid"])
    return st.dictionaries(st.one_of(keys, text_input()),
                           st.one_of(host_value, st.sampled_from(["rw", "ro"])), max_size=5)


def is_safe_name(value: str) -> bool:
    """What every accepted identifier must be: printable ASCII, no separator, no '..'."""
    return (isinstance(value, str) and value != "" and "/" not in value and ".." not in value
            and all(0x21 <= ord(c) <= 0x7e for c in value))

