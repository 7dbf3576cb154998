"""An installed netbuild (not the editable checkout) carries its recipes and iPXE templates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SystemClosure

pytestmark = pytest.mark.nix

REPO = Path(__file__).resolve().parents[2]


def test_a_regular_install_has_its_data_files(tmp_path: Path, system_closure: SystemClosure) -> None:
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    source.mkdir()
    for name in ("builder", "recipes", "ipxe"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)  # nothing may still point into the source tree

    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "from builder.recipe import RECIPES_DIR as r; from builder.writers.ipxe import "
         "TEMPLATES_DIR as t; print(r); print(t)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    assert where == [str(target / "builder" / "recipes"), str(target / "builder" / "ipxe")]
    listing = subprocess.run([sys.executable, "-m", "builder", "recipes"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "netboot (default)" in listing.stdout, listing.stderr
    build = subprocess.run([sys.executable, "-m", "builder", str(system_closure.closure_json), "-o", "out"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (elsewhere / "out" / "netboot.ipxe").read_text().startswith("#!ipxe\n")
