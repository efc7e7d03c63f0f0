"""The install resolves what was tested (issue 32): requirements.lock pins the whole tree, and the
environment the tests run in is exactly that tree. A dependency that drifts (SQLAlchemy 2.1
silently stopped Prefect's scheduler) fails here before it fails a night."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"
NOT_PINNED = {"shardvec", "pip", "setuptools", "wheel"}  # the project itself and the installer's own


def pins() -> dict[str, str]:
    found = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
            found[canonicalize_name(name)] = version
    return found


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_every_installed_package_is_the_locked_version():
    locked, have = pins(), installed()
    # torch's CPU build carries a local label (2.13.0+cpu) that the lock leaves out on purpose
    wrong = {n: (have[n], v) for n, v in locked.items() if n in have and have[n].split("+")[0] != v}
    missing = sorted(set(locked) - set(have))
    unlocked = sorted(set(have) - set(locked) - NOT_PINNED)
    assert not wrong, f"installed != locked (name: (installed, locked)): {wrong}; run `make install`"
    assert not missing, f"locked but not installed: {missing}"
    assert not unlocked, f"installed but not in requirements.lock: {unlocked}; run `make lock`"


def test_the_lock_satisfies_what_pyproject_asks_for():
    import tomllib

    project = tomllib.loads((LOCK.parent / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    locked = pins()
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is a dependency but not in requirements.lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"the lock's {name}=={locked[name]} breaks {text}"
        )


def test_the_lock_keeps_sqlalchemy_below_2_1():
    """SQLAlchemy 2.1.x makes Prefect 3.8.8's scheduler fail on every loop: no run is ever scheduled."""
    major, minor = (int(p) for p in pins()["sqlalchemy"].split(".")[:2])
    assert (major, minor) == (2, 0)
