"""Scenarios loaded before, kept by the content that made them: collection without re-parsing.

Every pytest process (the controller and each xdist worker) collects the whole
catalog; parsing and checking 239 YAML files took ~0.1 s of each, more than
anything else pytest does before the first scenario.  A file that loaded once
is kept as its pickled scenarios, named by the hash of the file's bytes, its
path and the source of the code that turns YAML into scenarios (this package,
``conformance/model`` and the schema): any change to one of them is a miss and
a fresh load.  A file that does not load is never kept, so its error (file and
line) is raised from the YAML every time.  A catalog collected whole is
also kept as one entry of all its files (``loaded_all``), valid while none of
them changed: one read where there were 240.  The cache is the user's own
(``cache_root()``, beside the built rootfs trees): deleting it costs one load.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

from conformance.model.cache_dir import cache_root
from conformance.model.errors import ScenarioError
from conformance.model.scenario import Scenario

from .schema import SCHEMA_PATH

PACKAGE = Path(__file__).resolve().parent.parent
#: the code whose output is kept: a change to any of these files is a new cache
SOURCES = ("catalog", "model")
#: a directory of entries of another version of the code, untouched this long, is removed
STALE_S = 7 * 24 * 3600


def loaded(path: Path) -> list[Scenario]:
    """``load_scenarios(path)``, from the cache when this very file loaded before with this code."""
    try:
        content = path.read_bytes()
    except OSError:
        return load_scenarios(path)  # it says what cannot be read, with the file's name
    entry = _cache_dir() / _entry_name(path, content)
    try:
        with open(entry, "rb") as kept:
            scenarios: list[Scenario] = pickle.load(kept)
        return scenarios
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        pass
    scenarios = load_scenarios(path)
    _keep(entry, scenarios)
    return scenarios


def _entry_name(path: Path, content: bytes) -> str:
    return hashlib.sha256(str(path).encode() + b"\0" + content).hexdigest()


def loaded_all(root: Path, paths: list[Path]) -> dict[Path, list[Scenario]]:
    """The scenarios of each of ``paths`` (the files of the catalog ``root``) that loads, by path.

    One entry holds them all, with the names of the per-file entries it was made of: when no file
    changed, collection reads that one entry instead of one per file (~10 ms of 240 files here).
    Otherwise each file is ``loaded`` (from its own entry, or parsed) and the catalog's entry is
    written anew (one per catalog directory: replaced, not added to).  A file that does not load
    is left out, so that its collection raises its error from the YAML, as ``loaded`` does.
    """
    names: dict[str, str] = {}  # file -> the name of its own entry (its path and bytes): what the entry was made of
    for path in paths:
        try:
            names[str(path)] = _entry_name(path, path.read_bytes())
        except OSError:
            continue  # its collection says what cannot be read
    entry = _cache_dir() / f"catalog-{hashlib.sha256(str(root).encode()).hexdigest()}"
    try:
        with open(entry, "rb") as kept:
            made_of, scenarios = pickle.load(kept)
        if made_of == names:
            return {path: scenarios[str(path)] for path in paths if str(path) in scenarios}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        pass
    found: dict[Path, list[Scenario]] = {}
    for path in paths:
        if str(path) in names:
            try:
                found[path] = loaded(path)
            except ScenarioError:
                continue
    _keep(entry, (names, {str(path): scs for path, scs in found.items()}))
    return found


def load_scenarios(path: Path) -> list[Scenario]:
    """``loader.load_scenarios``, imported on the first miss: a collection served from the cache
    never imports the loader and PyYAML (~17 ms of the plugin's imports here)."""
    from .loader import load_scenarios as load

    return load(path)


def _keep(entry: Path, scenarios: object) -> None:
    """Write the entry whole or not at all (xdist workers collect at once)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=entry.parent, prefix=".new-")
    except OSError:  # a read-only or full cache: loaded every time, as before
        return
    try:
        with os.fdopen(fd, "wb") as out:
            pickle.dump(scenarios, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(staged, entry)
    except OSError:
        Path(staged).unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def _cache_dir() -> Path:
    """This code's directory of entries.  Other versions' directories that nothing wrote to for
    STALE_S are removed when a new one is made (two checkouts at work side by side keep theirs)."""
    digest = hashlib.sha256(SCHEMA_PATH.read_bytes())
    for part in SOURCES:
        for source in sorted((PACKAGE / part).glob("*.py")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    base = cache_root() / "loaded-scenarios"
    here = base / digest.hexdigest()[:24]
    if not here.is_dir() and base.is_dir():
        for other in base.iterdir():
            try:
                if time.time() - other.stat().st_mtime > STALE_S:
                    shutil.rmtree(other, ignore_errors=True)
            except OSError:
                continue
    return here
