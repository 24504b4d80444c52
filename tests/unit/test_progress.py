"""Progress on a terminal for long work, silence elsewhere."""
import io

from shareblock.terminal.progress import Progress
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
