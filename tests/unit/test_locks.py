"""Per-volume locks: one target-changing step per volume, across processes."""
import multiprocessing
import threading
import time

from shareblock.control.locks import VolumeLocks


def _note(path, who):
    with open(path, "a") as f:
        f.write(who + "\n")


def _hold_then_note(folder, log):
    with VolumeLocks(folder).hold("vol-1"):
        _note(log, "child")


def test_second_process_waits_for_the_holder(tmp_path):
    log = tmp_path / "order.log"
    locks = VolumeLocks(tmp_path)
    with locks.hold("vol-1"):
        with locks.hold("vol-1"):  # re-entered by the holder: no self-deadlock
            pass
        child = multiprocessing.get_context("fork").Process(target=_hold_then_note,
                                                            args=(tmp_path, log))
        child.start()
        time.sleep(0.3)
        _note(log, "parent")  # still holding: the child cannot be first
    child.join(10)
    assert log.read_text().split() == ["parent", "child"]


def test_other_volumes_do_not_wait(tmp_path):
    locks, done = VolumeLocks(tmp_path), threading.Event()
    with locks.hold("vol-1"):
        t = threading.Thread(target=lambda: VolumeLocks(tmp_path).hold("vol-2").__enter__()
                             or done.set())
        t.start()
        t.join(5)
    assert done.is_set()
    assert oct((tmp_path / "vol-1.lock").stat().st_mode & 0o777) == "0o600"
