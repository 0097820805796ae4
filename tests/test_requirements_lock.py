"""The image installs what was tested: ``requirements.lock`` pins every runtime dependency of
``pyproject.toml`` within its range, with hashes, and the Dockerfile installs exactly that (and
keeps the logger's buffering: no ``PYTHONUNBUFFERED``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    """Each dependency in pyproject.toml has one pinned version that its specifier allows
    (after adding a dependency, run ``make lock``)."""
    pins = _pins()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        assert dependency.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {dependency.specifier}"
        )


def test_every_pin_carries_hashes() -> None:
    """pip installs the lock with --require-hashes: every pinned line is followed by hashes."""
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.strip())
    assert len(blocks) == len(_pins())
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_image_installs_the_lock_and_keeps_log_buffering() -> None:
    """The Dockerfile installs requirements.lock with hashes (no version ranges), and sets no
    PYTHONUNBUFFERED."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "COPY requirements.lock" in dockerfile
    assert "PYTHONUNBUFFERED" not in re.sub(r"#.*", "", dockerfile)
