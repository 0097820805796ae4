"""The distribution builds as `make install` builds it, with nothing for setuptools to warn
about (SPDX licence string, licence file, version, py.typed, flat-layout editable install)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gateway

ROOT = Path(__file__).resolve().parents[1]


def pip(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


def backend_warnings(output: str) -> list[str]:
    """Warning lines the build backend printed (pip's own index notices aside)."""
    return [
        line
        for line in output.splitlines()
        if "Warning" in line and "Location 'file://" not in line
    ]


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_ships_what_it_should(tmp_path: Path) -> None:
    """`pip wheel` (quiet, as make install) prints no warning; the wheel has both packages,
    their py.typed, the LICENSE and an SPDX License-Expression, and no tests or examples."""
    result = pip(
        Path(sys.executable), "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not backend_warnings(result.stdout + result.stderr), result.stderr
    (wheel,) = tmp_path.glob("event_gateway-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gateway/py.typed" in names
    assert "consumers/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not [n for n in names if n.startswith(("tests/", "examples/", "scripts/", "docs/"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert f"Version: {gateway.__version__}" in text


@pytest.mark.slow
def test_editable_install_prints_no_warning(tmp_path: Path) -> None:
    """`pip install --quiet -e .` (what make install runs) prints no setuptools warning."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = pip(venv / "bin" / "python", "install", "--quiet", "--no-deps", "-e", str(ROOT),
                 cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not backend_warnings(result.stdout + result.stderr), result.stderr
