"""The loop_config structure handed to LOOP_CONFIGURE (<linux/loop.h>)."""
import struct

from shareblock.blockdev import loopdev


def test_loop_config_layout():
    cfg = loopdev._config(7, "/pool/v.img", loopdev.LO_FLAGS_DIRECT_IO)
    assert len(cfg) == 4 + 4 + 232 + 8 * 8  # fd, block_size, loop_info64, reserved
    assert struct.unpack_from("II", cfg) == (7, 0)  # block size 0: the default
    info = 8
    assert struct.unpack_from("I", cfg, info + 5 * 8 + 3 * 4)[0] == 16  # lo_flags
    name = cfg[info + 56:info + 56 + 64]
    assert name.rstrip(b"\0") == b"/pool/v.img"


def test_long_names_are_cut_to_the_field():
    cfg = loopdev._config(3, "/" + "x" * 200, 0)
    assert len(cfg) == 304 and cfg[8 + 56 + 63] == 0  # NUL-terminated within 64 bytes
