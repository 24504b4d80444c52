"""The lab is real: LIO and nvmet exports, real initiators, an outsider refused."""
import os
from pathlib import Path

import pytest

from shareblock.lab.initiators import (InitiatorError, IscsiInitiator, NvmeInitiator,
                                       read_back, write_pattern)
from shareblock.lab.proof import lio_export, nvmet_export


def test_kernel_targets_are_real():
    mounts = Path("/proc/mounts").read_text().splitlines()
    assert any(line.split()[1:3] == ["/sys/kernel/config", "configfs"] for line in mounts)
    assert Path("/sys/kernel/config/target/version").read_text().startswith("Target Engine")
    assert Path("/sys/kernel/config/nvmet/subsystems").is_dir()
    assert Path("/sys/module/nvmet_tcp").exists() and Path("/sys/module/iscsi_target_mod").exists()


def test_lio_iscsi_round_trip_and_outsider_refused(loop_device, unique):
    dev = loop_device(64)
    target_iqn = f"iqn.2026-11.io.shareblock.lab:{unique}"
    allowed = IscsiInitiator(f"iqn.2026-11.io.shareblock.lab:host-a-{unique}")
    outsider = IscsiInitiator(f"iqn.2026-11.io.shareblock.lab:host-x-{unique}")
    chap = ("host-a", "secret-a-12chars")
    with lio_export(dev, target_iqn, f"sblab_{unique}", {allowed.iqn: chap}):
        try:
            disk = allowed.login(target_iqn, "127.0.0.1", chap=chap)
            pattern = os.urandom(1 << 20)
            write_pattern(disk, pattern)
            assert read_back(disk, len(pattern)) == pattern
            assert read_back(dev, len(pattern)) == pattern  # it reached the target's device
            with pytest.raises(InitiatorError):
                outsider.login(target_iqn, "127.0.0.1", chap=chap)
            assert outsider.session(target_iqn) is None
        finally:
            for who in (allowed, outsider):
                who.logout(target_iqn, "127.0.0.1")
                who.remove()


def test_nvmet_tcp_round_trip_and_outsider_refused(loop_device, unique):
    dev = loop_device(64)
    nqn = f"nqn.2026-11.io.shareblock.lab:{unique}"
    host_nqn = f"nqn.2014-08.org.nvmexpress:uuid:{unique}-0000-4000-8000-0000000000"
    allowed = NvmeInitiator(host_nqn + "01")
    outsider = NvmeInitiator(host_nqn + "ff")
    # its own TCP port: shareblock's ports on 4420 may be live from other tests
    with nvmet_export(dev, nqn, [allowed.hostnqn], port_id=901, trsvcid=4431):
        try:
            disk = allowed.connect(nqn, "127.0.0.1", 4431)
            pattern = os.urandom(1 << 20)
            write_pattern(disk, pattern, offset_mb=3)
            assert read_back(disk, len(pattern), offset_mb=3) == pattern
            assert read_back(dev, len(pattern), offset_mb=3) == pattern
            with pytest.raises(InitiatorError):
                outsider.connect(nqn, "127.0.0.1", 4431, timeout=5)
            assert outsider.controller(nqn) is None
        finally:
            allowed.disconnect(nqn)
            outsider.disconnect(nqn)
