import subprocess
import sys

from boundgeo.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "boundgeo", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "demo" in done.stdout
