"""The installed package carries every subpackage, the configs and the shipped weights."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "drl").rglob("__init__.py")}
    assert on_disk | {"drl.conf"} == listed


def test_shipped_weights_stay_small():
    total = sum(p.stat().st_size for p in (ROOT / "drl" / "assets").rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024, f"shipped weights are {total / 2**20:.1f} MiB (limit 20 MiB)"
