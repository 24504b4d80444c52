"""The shipped systemd units: rendered with this installation's paths, installed
by `shareblock-units`, and clean under `systemd-analyze verify`."""
import shutil
import subprocess

import pytest

from shareblock.systemd import units


def test_every_unit_renders_with_this_installations_commands(tmp_path):
    for name in units.UNITS:
        text = units.render(name, {"CONFIG": str(tmp_path / "sb.conf")})
        assert "@" not in text.replace("shareblock@", ""), f"{name}: a placeholder is left"
        execs = [line.split("=", 1)[1].split()[0] for line in text.splitlines()
                 if line.startswith("ExecStart=")]
        assert execs and all(e.startswith(units.bindir() + "/") for e in execs), execs
        assert shutil.which(execs[0].rsplit("/", 1)[1], path=units.bindir()), execs[0]
        assert "Restart=on-failure" in text


def test_order_restore_before_initiators_and_the_rest_after_it():
    restore = units.render("shareblock-restore.service", {})
    assert "After=sys-kernel-config.mount systemd-modules-load.service" in restore
    assert "Before=iscsid.service open-iscsi.service nvmf-autoconnect.service" in restore
    for name in ("shareblock-guard.service", "shareblock-exporter.service"):
        assert "shareblock-restore.service" in units.render(name, {}).split("[Service]")[0]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    paths = units.install(tmp_path, {"CONFIG": "/etc/shareblock/shareblock.conf"})
    res = subprocess.run(["systemd-analyze", "verify", *map(str, paths)],
                         capture_output=True, text=True)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in paths)


def test_the_installer_writes_them_and_refuses_bad_values(tmp_path, capsys):
    assert units.main(["install", "--unit-dir", str(tmp_path), "--listen", "0.0.0.0:9741",
                       "shareblock-exporter.service"]) == 0
    text = (tmp_path / "shareblock-exporter.service").read_text()
    assert "--listen 0.0.0.0:9741" in text and "/etc/shareblock/shareblock.conf" in text
    assert units.main(["install", "--unit-dir", str(tmp_path / "x"),
                       "--config", "/etc/a b.conf"]) == 2
    assert "no spaces" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())
    assert units.main(["show", "nope.service"]) == 2
