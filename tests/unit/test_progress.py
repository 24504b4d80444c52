"""Progress on a terminal for long work, silence elsewhere."""
import io
import logging
import os

from shareblock.cli import main as cli
from shareblock.driver import copying
from shareblock.terminal.progress import Progress, ProgressHandler
from tests.unit.test_control import cli_plane, env, iscsi  # noqa: F401  (fixtures)


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_sees_one_line_redrawn_and_cleared():
    out = Tty()
    with Progress("restore: exports", stream=out, every=0) as shown:
        for done in (100, 200, 250):
            shown(done, 250)
    text = out.getvalue()
    assert "restore: exports: 100/250 40%" in text and "250/250 100%" in text
    assert text.endswith("\r\033[K"), "the line is cleared at the end"
    assert "\n" not in text


def test_a_pipe_a_file_or_json_see_nothing():
    out = io.StringIO()  # not a terminal
    with Progress("x", stream=out) as shown:
        shown(1, 2)
    assert out.getvalue() == ""
    out = Tty()
    with Progress("x", stream=out, enabled=False) as shown:  # --json
        shown(1, 2)
    assert out.getvalue() == ""


def test_redraws_are_throttled_but_the_last_one_shows():
    out = Tty()
    shown = Progress("x", stream=out, every=3600)
    for done in range(1, 1001):
        shown(done, 1000)
    assert out.getvalue().count("\r\033[Kx:") == 2  # the first, and the last


def test_reconcile_and_the_guard_pass_report_their_progress(cli_plane):  # noqa: F811
    for i in range(3):
        vol = cli_plane.create(1, "multiattach", f"v{i}")
        cli_plane.attachment_create(vol["id"], iscsi(1))
        cli_plane.attachment_create(vol["id"], iscsi(2))
    heard = []
    cli_plane.reconcile(lambda done, total: heard.append((done, total)))
    assert heard and heard[-1] == (3, 3)
    heard.clear()
    cli_plane.guard_pass(lambda done, total: heard.append((done, total)))
    assert heard == [(1, 3), (2, 3), (3, 3)]


def test_a_plain_copys_ticks_draw_a_line_on_a_terminal_only(tmp_path, monkeypatch):
    """A file pool's copy, deep below the CLI, ticks per chunk; the CLI's handler
    draws them on a terminal and clears the line; a pipe sees nothing."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(os.urandom(4 << 20))
    monkeypatch.setattr(copying, "_reflink", lambda a, b: False)
    monkeypatch.setattr(copying, "CHUNK", 1 << 20)
    ticks = logging.getLogger("shareblock.progress.ticks")
    for out, drawn in ((Tty(), True), (io.StringIO(), False)):
        shown = ProgressHandler(out)
        ticks.addHandler(shown)
        try:
            copying.copy_file(src, dst, what="snapshot s")
        finally:
            ticks.removeHandler(shown)
        dst.unlink()
        text = out.getvalue()
        if drawn:
            assert "snapshot s: " in text and "100%" in text and text.endswith("\r\033[K")
        else:
            assert text == ""


def test_the_cli_listens_to_ticks_unless_json_or_debug(monkeypatch):
    ticks = logging.getLogger("shareblock.progress.ticks")
    seen = []
    def drawing():
        return sum(isinstance(h, ProgressHandler) for h in ticks.handlers)
    monkeypatch.setattr(cli, "dispatch", lambda args, argv: seen.append(drawing()) or 0)
    cli.main(["list"])
    cli.main(["list", "--json"])
    cli.main(["--debug", "list"])
    assert seen == [1, 0, 0] and drawing() == 0
