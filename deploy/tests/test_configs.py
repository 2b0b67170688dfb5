"""The shipped example config is one the broker accepts, and `--check-config`
rejects a broken one naming the key."""
import os

from conftest import ROOT, veil


def test_the_example_config_is_valid():
    p = veil("broker", "--config", os.path.join(ROOT, "veil.example.toml"), "--check-config")
    assert "configuration is valid" in p.stdout


def test_check_config_names_what_is_wrong(tmp_path):
    bad = tmp_path / "veil.toml"
    bad.write_text('log_format = "xml"\n')
    p = veil("broker", "--config", str(bad), "--check-config", check=False)
    assert p.returncode != 0
    assert "xml" in p.stderr
