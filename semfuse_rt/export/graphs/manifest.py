"""Engine-directory manifests: what an artefact was built from, so a rebuild is skipped
only when nothing that matters changed."""
from __future__ import annotations

import hashlib
import inspect
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import ModuleType

from semfuse_rt.cache import atomic_write_bytes, sha256_of

MANIFEST_NAME = "manifest.json"


def tool_versions(*packages: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def source_sha256(*modules: ModuleType) -> str:
    """Identifies the code of these modules: a manifest's key, so that editing the code
    invalidates what it made."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_for(manifest: dict | None, key: dict) -> dict | None:
    """`manifest` where it was made for `key` (it records each of key's entries alike), else None."""
    if manifest is not None and all(manifest.get(k) == v for k, v in key.items()):
        return manifest
    return None


def rebuild_reason(directory: Path, manifest: dict | None, key: dict, files: list[str] | None = None) -> str | None:
    """Why the artefacts in `directory` cannot be reused, in a few words; None if they can.
    A folder with nothing in it yet needs no reason: that is a first build."""
    directory = Path(directory)
    if manifest is None:
        if (directory / MANIFEST_NAME).exists():
            return f"{MANIFEST_NAME} is damaged"
        return "its manifest is missing" if directory.is_dir() and any(directory.iterdir()) else None
    changed = [k for k, v in key.items() if manifest.get(k) != v]
    if changed:
        return f"made for another {', '.join(k.replace('_', ' ') for k in changed)}"
    recorded = manifest.get("files", {})
    for name in files if files is not None else list(recorded):
        path = directory / name
        if name not in recorded or not path.is_file():
            return f"{name} is missing"
        if sha256_of(path) != recorded[name]:
            return f"{name} is damaged (its sha256 differs from the manifest's)"
    return None if recorded else "its manifest lists no files"


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Writes the manifest with its time of creation; returns it as read_manifest will read it."""
    manifest = dict(manifest, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(Path(directory) / MANIFEST_NAME, text.encode())
    return json.loads(text)
