import subprocess
import sys

import pytest

from shareblock.cli import main as cli


def test_namespace_parts_import_from_their_folders():
    import shareblock.driver
    import shareblock.lab
    import shareblock.targets
    for mod in (shareblock.driver, shareblock.targets, shareblock.lab):
        assert mod.__file__ and "site-packages" not in mod.__file__ or "shareblock" in mod.__file__


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("shareblock 0.")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "multi-attach" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "shareblock.cli.main", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("shareblock ")


def test_nothing_but_the_adapter_needs_cinder():
    code = ("import sys, shareblock.driver.volume_driver, shareblock.driver.pools, "
            "shareblock.driver.options, shareblock.targets.factory, shareblock.targets.agent; "
            "assert not [m for m in sys.modules if m == 'cinder' or m.startswith('cinder.')]")
    subprocess.run([sys.executable, "-c", code], check=True)
