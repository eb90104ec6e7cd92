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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_manifest(directory: Path, manifest: dict) -> Path:
    manifest = dict(manifest, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = Path(directory) / MANIFEST_NAME
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def artefacts_intact(directory: Path, manifest: dict) -> bool:
    """Every file the manifest lists exists with the recorded sha256."""
    for name, recorded in manifest.get("files", {}).items():
        path = Path(directory) / name
        if not path.is_file() or sha256_of(path) != recorded:
            return False
    return bool(manifest.get("files"))


def matches(manifest: dict | None, key: dict) -> bool:
    return manifest is not None and all(manifest.get(k) == v for k, v in key.items())
