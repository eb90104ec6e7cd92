"""`semfuse-rt export --triton DIR`: the whole-fuse graph as a model of a Triton Inference
Server model repository,

    DIR/NAME/config.pbtxt           the model configuration (protobuf text format)
    DIR/NAME/1/model.onnx           version 1: the graph (engine/deploy/whole_fuse_graph.py)
    DIR/NAME/1/model.onnx.json      its manifest, as `export -o` writes beside the graph

with ONNX Runtime's platform. The graph has no batch dimension (K, the images of one fuse,
is its first), so max_batch_size is 0 and the dims are the tensors' whole shapes. The model
folder appears whole or not at all: it is written as a hidden temp folder in DIR (the same
file system, which a folder beside DIR, DIR being a mount of shared storage, may not be) and
renamed into place; a server polling DIR may for that moment note a folder without a config."""
from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from semfuse_rt.cache import TEMP_SUFFIX, sweep_stale
from semfuse_rt.engine.io.images import check_writable_folder, file_type, refuse_link_loop
from semfuse_rt.errors import SemfuseError

CONFIG_NAME = "config.pbtxt"
VERSION = "1"
MODEL_FILE = "model.onnx"
PLATFORM = "onnxruntime_onnx"
# Triton's own rule for a model's folder name is only "a folder"; these characters are what
# its HTTP and gRPC URLs and every shell take without quoting.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# config.pbtxt's data_type for each numpy dtype the graph's tensors have.
TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


def default_model_name(preset: str) -> str:
    return "semfuse_" + preset.replace("-", "_")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name) or len(name) > 128:
        raise SemfuseError(f"--model-name {name!r}: use letters, digits, '_', '.' and '-' (not first), at most "
                           "128 characters; it is the model's folder and the name clients ask for")
    return name


@dataclass(frozen=True)
class TritonModel:
    """Where one model of a repository goes: DIR/NAME."""

    repository: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.repository / self.name

    @property
    def graph(self) -> Path:
        return self.folder / VERSION / MODEL_FILE


def check_repository(repository: str | os.PathLike, name: str) -> TritonModel:
    """Before any work: DIR is a folder that can be written (or made), and DIR/NAME does not
    yet hold anything (an empty folder is taken over)."""
    name = check_model_name(name)
    repository = check_writable_folder(repository, "--triton")
    model = TritonModel(repository, name)
    refuse_link_loop(model.folder)
    if model.folder.is_symlink() or (model.folder.exists() and not model.folder.is_dir()):
        kind = ("a symbolic link" if model.folder.is_symlink() else "a file" if model.folder.is_file()
                else file_type(model.folder.stat().st_mode))
        raise SemfuseError(f"--triton {repository}: {model.folder} is {kind}, not a model folder; give another "
                           "--model-name or remove it first")
    if model.folder.is_dir() and any(model.folder.iterdir()):
        raise SemfuseError(f"--triton {repository}: model folder {model.folder} already exists and is not empty; "
                           "give another --model-name, or remove it first")
    return model


def _dims(shape: list) -> str:
    """A contract's shape ([2, "height", "width", 3]) as config dims: -1 for a dynamic one."""
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape) + " ]"


def config_text(model: TritonModel, terms: dict, description: str) -> str:
    """config.pbtxt for the graph whose contract (whole_fuse_graph.contract) is `terms`;
    `description`: one line on what it fuses, for its first comment."""
    low, high = terms["shorter_side"]
    sides = f"{low} to {high}" if high is not None else f"{low} or more"
    (input_name, image), = terms["inputs"].items()
    lines = [
        f"# {description}",
        f"# `{input_name}`: the {terms['images']} images of one fuse, (K, H, W, 3) uint8 RGB; a grey image",
        "# replicated to three channels. `fused`: the result of a colour set; `fused_luma`: of a grey one.",
        f"# The shorter side of the images must be {sides} pixels: the graph refuses other sizes.",
        "# TensorRT: build model.plan from 1/model.onnx (README, `export`), put it in 1/ and set",
        '# platform: "tensorrt_plan"; the dims stay as they are.',
        f'name: "{model.name}"',
        f'platform: "{PLATFORM}"',
        "max_batch_size: 0",
        "input [",
        "  {",
        f'    name: "{input_name}"',
        f"    data_type: {TRITON_TYPES[image['dtype']]}",
        f"    dims: {_dims(image['shape'])}",
        "  }",
        "]",
        "output [",
        ",\n".join("  {\n"
                   f'    name: "{name}"\n'
                   f"    data_type: {TRITON_TYPES[output['dtype']]}\n"
                   f"    dims: {_dims(output['shape'])}\n"
                   "  }" for name, output in terms["outputs"].items()),
        "]",
        # KIND_AUTO: on the GPUs where the server has them, else on the CPU.
        "instance_group [ { kind: KIND_AUTO, count: 1 } ]",
    ]
    parameters = {"semfuse_rt_images": terms["images"], "semfuse_rt_shorter_side_min": low}
    if high is not None:
        parameters["semfuse_rt_shorter_side_max"] = high
    lines += [f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
              for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def write_repository(model: TritonModel, files: dict[str, bytes]) -> None:
    """`files` (paths relative to the model folder) written into a hidden temp folder in the
    repository, which is then renamed to DIR/NAME: a reader (a Triton polling the repository)
    sees the whole model or none of it."""
    repository = model.repository
    made = None  # the outermost folder this call makes, removed again if the write fails
    if not repository.exists():
        made = repository
        while not made.parent.exists() and made.parent != made:
            made = made.parent
    staging = repository / f".{model.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        repository.mkdir(parents=True, exist_ok=True)
        sweep_stale(repository)  # temp folders of killed exports
        staging.mkdir()
        for relative, data in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.rename(staging, model.folder)  # onto an empty folder too; a non-empty one fails
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise SemfuseError(f"--triton {repository}: cannot write model folder {model.folder} "
                           f"({error.strerror or error})") from None
