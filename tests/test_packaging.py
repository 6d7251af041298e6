"""The built wheel works on its own: installed without ``-e``, from outside the repository.

Why: the editable install the suite runs against reads everything straight from the checkout,
so a file missing from the wheel (the bundled search spaces are package data) goes unnoticed.
The venv is made with ``--system-site-packages``: torch (2.13.0, as installed), optuna and the
other dependencies come from this environment, because installing torch into a fresh venv
would take minutes and gigabytes. The wheel goes in with ``--no-deps``. The editable install's
``__editable__`` finder lives in those system site-packages too, so the test asserts that the
venv's regular copy of autokd is the one imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import optuna
import pytest

from autokd.record import SearchRecord
from tests._helpers import count_complete

REPO = Path(__file__).resolve().parents[1]

# run by the venv's python from a directory outside the repository
_PROBE = """
import json, sys
import autokd
from autokd.space import SPACES_DIR, space_names
print(json.dumps({"file": autokd.__file__, "prefix": sys.prefix, "spaces_dir": str(SPACES_DIR),
                  "spaces": space_names(),
                  "symlinks": [p.name for p in SPACES_DIR.iterdir() if p.is_symlink()],
                  "editable_finders": [repr(f) for f in sys.meta_path if "__editable__" in repr(f)]}))
"""


def _major_minor(dist: str) -> tuple[int, int] | None:
    try:
        major, minor = version(dist).split(".")[:2]
        return int(major), int(minor)
    except (PackageNotFoundError, ValueError):
        return None


def _isolation_flags() -> list[str]:
    """Build with this environment's setuptools when it can, so no package index is needed.

    setuptools >= 70.1 writes wheels itself; older ones (>= 68, as pyproject.toml asks) need
    the ``wheel`` package. Otherwise pip's isolated build fetches setuptools.
    """
    setuptools = _major_minor("setuptools")
    if setuptools and (setuptools >= (70, 1) or (setuptools >= (68, 0) and _major_minor("wheel"))):
        return ["--no-build-isolation"]
    return []


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _sources(dest: Path) -> Path:
    """A copy of what the wheel is built from (pip leaves build/ and *.egg-info in the tree)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "autokd", dest / "autokd", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.slow
def test_wheel_installed_without_editable_runs_a_search(tmp_path: Path) -> None:
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("pip") is None:
        pytest.skip("needs the venv module and pip to build and install a wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["AUTOKD_CACHE"] = str(tmp_path / "cache")
    src, dist, venv = _sources(tmp_path / "src"), tmp_path / "dist", tmp_path / "venv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *_isolation_flags(),
                  "-w", str(dist), "."], src, env, 300)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("autokd-*.whl")

    made = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                 str(venv)], tmp_path, env, 120)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv: {made.stderr.strip()[-300:]}")
    python, autokd = venv / "bin" / "python", venv / "bin" / "autokd"
    # pip comes from the system site-packages and installs into the venv it runs in;
    # --ignore-installed: the editable autokd it can also see is neither replaced nor removed
    installed = _run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed",
                      "--no-index", str(wheel)], elsewhere, env, 300)
    assert installed.returncode == 0, installed.stderr
    assert autokd.exists()

    probe = _run([str(python), "-c", _PROBE], elsewhere, env, 120)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    venv_dir = venv.resolve()
    file, spaces_dir = Path(found["file"]).resolve(), Path(found["spaces_dir"]).resolve()
    assert Path(found["prefix"]).resolve() == venv_dir
    assert file.is_relative_to(venv_dir) and not file.is_relative_to(REPO), found
    assert spaces_dir.is_relative_to(venv_dir), found  # real files, not a link into the repo
    assert found["symlinks"] == []
    assert {"cnn", "cnn1d", "mlp"} <= set(found["spaces"])

    results = tmp_path / "results"
    searched = _run([str(autokd), "search", "--dataset", "wine", "--budget", "2", "--epochs",
                     "1", "--device", "cpu", "--name", "wheel", "--results", str(results),
                     "--json"], elsewhere, env, 300)
    assert searched.returncode == 0, searched.stderr
    summary = json.loads(searched.stdout)
    assert summary["status"] == "finished" and summary["finished_trials"] == 2
    db = results / "wheel" / "study.db"
    assert count_complete(db) == 2
    study = optuna.load_study(study_name="wheel", storage=f"sqlite:///{db}")
    assert SearchRecord.of(study).dataset["name"] == "wine"
