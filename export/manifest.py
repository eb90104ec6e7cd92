"""Engine-directory manifests: what an artefact was built from, so a rebuild is skipped
only when nothing that matters changed."""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

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


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


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


def write_manifest(directory: Path, manifest: dict) -> Path:
    manifest = dict(manifest, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = Path(directory) / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path
