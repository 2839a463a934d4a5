"""The built-in formats ship inside the wheel and are found by an installed package."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT


def test_wheel_ships_templates_and_they_load_when_installed(tmp_path):
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("template_forge", "templates", "trainer"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("template_forge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("template_forge/templates/")}
    assert {p.name for p in (ROOT / "templates").glob("*.yaml")} | {"README.md"} <= shipped
    # the trainer ships as the tforge_trainer package
    trainer = {Path(n).name for n in names if n.startswith("tforge_trainer/")}
    assert {p.name for p in (ROOT / "trainer" / "tforge_trainer").glob("*.py")} <= trainer
    # Install into a bare target folder and load a built-in from there, away from the source tree.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = ("import template_forge.format.formats as r, template_forge.format.spec as s; p = r.templates_dir(); "
            "print(p); print(s.load_builtin('llama3').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    where, name = out.stdout.split()
    assert Path(where).is_relative_to(target) and name == "llama3"
