"""The package builds a wheel and an sdist that install and run in a clean virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from materialize_postgres import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_and_sdist_install_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    build_sdist = (
        "import sys; from setuptools import build_meta as b; import os; os.chdir(sys.argv[1]); "
        "print(b.build_sdist(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", build_sdist, str(ROOT), str(dist)], check=True, capture_output=True)
    wheels = list(dist.glob("materialize_postgres-*.whl"))
    sdists = list(dist.glob("materialize[-_]postgres-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    # A clean environment: the wheel and its declared dependencies, nothing else (pip's cache helps).
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheels[0])],
        check=True,
        capture_output=True,
        timeout=600,
    )
    version = subprocess.run([env / "bin" / "materialize-postgres", "--version"], capture_output=True, check=True)
    assert version.stdout.decode().strip() == f"materialize-postgres {__version__}"
    spec = subprocess.run([env / "bin" / "materialize-postgres", "spec"], capture_output=True, check=True)
    assert b'"protocol":3032023' in spec.stdout
