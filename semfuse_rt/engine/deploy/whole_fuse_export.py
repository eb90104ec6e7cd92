"""`semfuse-rt export`'s files: the whole-fuse graph (engine/deploy/whole_fuse_graph.py) and its
manifest beside it (OUTPUT.json), every option and path checked before any work, both
files written together or not at all."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from semfuse_rt.cache import StagedWrites
from semfuse_rt.engine.deploy.graph_manifest import manifest_path
from semfuse_rt.engine.deploy.triton_repository import (CONFIG_NAME, MODEL_FILE, VERSION, TritonModel,
                                                       check_model_name, check_repository, config_text,
                                                       default_model_name, write_repository)
from semfuse_rt.engine.io.images import check_not_an_input, check_writable_folder, file_type, refuse_link_loop
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.manifest import tool_versions
from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET, check_opset
from semfuse_rt.kernels.source import MAX_INPUTS

OUTPUT_FOR_PEOPLE = "fused"  # the output a summary line quotes the float16 error of
DEFAULT_SIZE = "512x512"  # a pyramid-blend graph's default: shorter sides 512 to 1023 (`blend`)
_SIZE = re.compile(r"(\d+)x(\d+)")


if TYPE_CHECKING:
    from semfuse_rt.engine.fuse.fuse_options import FuseOptions


def parse_size(text: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (height, width)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise SemfuseError(f"--size must be WIDTHxHEIGHT in pixels, such as 640x512; got {text!r}")
    return int(match[2]), int(match[1])


def check_images(count: int) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= MAX_INPUTS:
        raise SemfuseError(f"--inputs (the images each fuse takes, fixed in the graph) must be from 2 to "
                           f"{MAX_INPUTS}, got {count}")
    return count


def _check_destination(path: Path, what: str) -> None:
    refuse_link_loop(path)
    if path.is_dir():
        raise SemfuseError(f"{path}: is a folder; name the {what} file")
    if path.exists() and not path.is_file():
        raise SemfuseError(f"{path}: is {file_type(path.stat().st_mode)}, not a regular file; "
                           f"write the {what} to a new or a regular file")


def check_output(output: str | os.PathLike, weights: str | os.PathLike | None) -> Path:
    """The graph's path and its manifest's: where they can be written, and neither is the
    weights file."""
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise SemfuseError(f"{output}: the graph's file name must end in .onnx")
    if not output.parent.is_dir():
        raise SemfuseError(f"{output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK):
        raise SemfuseError(f"{output}: folder {output.parent} is not writable")
    _check_destination(output, "graph")
    _check_destination(manifest_path(output), "manifest")
    if weights is not None:
        check_not_an_input(output, [weights])
        check_not_an_input(manifest_path(output), [weights])
    return output


def describe(manifest: dict) -> str:
    """What a graph fuses, from its manifest: "preset blend (max at relu1_1, ...)"."""
    options = manifest["options"]
    return (f"preset {manifest['preset']} ({manifest['method']} at {options['layer']}, {options['init']} start, "
            f"{options['steps']} steps)")


@dataclass
class ExportedFuse:
    path: Path
    manifest_path: Path
    manifest: dict
    triton: TritonModel | None = None

    def summary(self) -> str:
        """One line for people: what the graph fuses, which images it takes, where it is."""
        low, high = self.manifest["shorter_side"]
        sides = f"{low} to {high}" if high is not None else f"{low} or more"
        where = (f"Triton model {self.triton.name} in repository {self.triton.repository} ({self.path}, "
                 f"{CONFIG_NAME})" if self.triton else str(self.path))
        half = ""
        if self.manifest.get("precision") == "fp16":
            error = self.manifest["fp16_error"][OUTPUT_FOR_PEOPLE]
            half = (f" in float16 (against float32 on the bundled pair: at most {error['max_levels']} grey levels, "
                    f"{error['mean_levels']:.2f} on average)")
        return (f"exported {describe(self.manifest)}{half} for {self.manifest['images']} images whose shorter side "
                f"is {sides} pixels -> {where} (manifest {self.manifest_path.name})")


def _destination(output: str | os.PathLike | None, triton: str | os.PathLike | None, model_name: str | None,
                 weights: str | os.PathLike | None) -> Path | None:
    """-o's graph, checked; None where --triton names the destination instead."""
    if triton is None:
        if model_name is not None:
            raise SemfuseError("--model-name applies to --triton (a model repository's model); -o names the "
                               "graph file itself")
        if output is None:
            raise SemfuseError("give -o FILE.onnx for the graph, or --triton DIR for a Triton model repository")
        return check_output(output, weights)
    if output is not None:
        raise SemfuseError(f"give -o or --triton, not both: --triton writes the graph to "
                           f"{Path(triton)}/MODEL/{VERSION}/{MODEL_FILE}")
    if model_name is not None:
        check_model_name(model_name)
    check_writable_folder(triton, "--triton")
    return None


def export_fuse(output: str | os.PathLike | None, options: FuseOptions | str = "max", *, images: int = 2,
                size: str | None = None, opset: int = DEFAULT_OPSET, weights: str | os.PathLike | None = None,
                show_progress: bool = True, triton: str | os.PathLike | None = None, model_name: str | None = None,
                fp16: bool = False, **keywords) -> ExportedFuse:
    """Write OUTPUT (.onnx), a whole fuse of `options` (a FuseOptions, or a method's name and
    the preset/fuse `keywords`, as Fuser takes them) for `images` inputs, and OUTPUT.json, its
    manifest. `size`
    (WIDTHxHEIGHT) picks the range of shorter sides a pyramid-blend start's graph takes.
    With `triton` (a folder) instead of `output`: the Triton model repository's model
    `model_name` (default semfuse_PRESET) there, holding both (triton_repository.py).
    `fp16`: the graph computes in float16, its error against float32 in the manifest
    (half_precision.py)."""
    # Torch is imported here, not at the top, so that the command's --help needs none.
    from semfuse_rt.engine.deploy.whole_fuse_graph import (GRAPH_SOURCE_SHA256, FuseSettings, accepted_sides,
                                                           export_whole_fuse)
    from semfuse_rt.engine.fuse.fuse_options import fuse_options
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.start.initialisation import STARTS

    checked = _destination(output, triton, model_name, weights)
    chosen = fuse_options(options, **keywords)
    fuser = Fuser(chosen.replace(weights=weights) if weights is not None else chosen)  # checked as `fuse` checks
    if not fuser.method.optimised or fuser.method.semantic:
        raise SemfuseError(f"--method {fuser.method.name} cannot be exported: its CAMs come from a classifier "
                           "run beside the fuse; use max or majority")
    if fuser.semantic.steps:
        raise SemfuseError(f"the semantic phase (--semantic-steps {fuser.semantic.steps}) is not part of an "
                           "exported graph; use --preset blend-steps, or --semantic-steps 0")
    check_images(images)
    assert fuser.rule is not None and fuser.preset is not None  # an optimised method has its rule and preset
    settings = FuseSettings(fuser.layer, fuser.rule, fuser.init, fuser.schedule, fuser.mean_base)
    settings.check()
    if size is not None and not STARTS[settings.init].pyramid_coarsest:
        raise SemfuseError("--size applies to a pyramid-blend start, whose depth depends on the size; a "
                           f"{settings.init} start's graph takes any size")
    height, width = parse_size(size or DEFAULT_SIZE)
    accepted_sides(settings, height, width)  # a size too small for the preset fails here, before the weights load
    check_opset(opset)
    if weights is not None and not settings.schedule.steps:
        raise SemfuseError("--weights does not apply: a graph without optimisation steps holds no network")
    # A Triton model's default name follows the preset, known only now.
    model = check_repository(triton, model_name or default_model_name(fuser.preset)) if triton is not None else None
    output = model.graph if model is not None else checked
    assert output is not None  # _destination checked -o where there is no --triton

    vgg = None
    if settings.schedule.steps:
        from semfuse_rt.export.networks.weights import load_vgg19

        vgg = load_vgg19(weights, show_progress=show_progress)
    data, terms = export_whole_fuse(vgg, settings, images, height, width, opset)
    precision: dict = {"precision": "fp32"}
    if fp16:
        from semfuse_rt.engine.deploy.half_precision import float16_error, to_float16

        half = to_float16(data)
        precision = {"precision": "fp16", "fp16_error": float16_error(data, half, terms)}
        data = half
    import onnx

    from semfuse_rt.export.tensorrt.tensorrt_ready import problems

    refusals = problems(onnx.load_from_string(data))
    manifest = {
        "preset": fuser.preset,
        "method": fuser.method.name,
        "options": _options(fuser),
        "opset": opset,
        **terms,
        **precision,
        "weights_sha256": vgg.sha256 if vgg else None,
        "weights_source": vgg.source if vgg else None,
        "graph_source_sha256": GRAPH_SOURCE_SHA256,
        # What TensorRT 10's ONNX parser would refuse (export/tensorrt/tensorrt_ready.py); empty: none.
        "tensorrt_problems": refusals,
        "files": {output.name: hashlib.sha256(data).hexdigest()},
        "tools": tool_versions("torch", "onnx", "onnxruntime"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    if model is not None:
        config = config_text(model, terms, f"semfuse-rt export --triton: {describe(manifest)}")
        write_repository(model, {CONFIG_NAME: config.encode(), f"{VERSION}/{MODEL_FILE}": data,
                                 f"{VERSION}/{manifest_path(Path(MODEL_FILE)).name}": manifest_data})
        return ExportedFuse(output, manifest_path(output), manifest, model)
    with StagedWrites() as files:
        files.add(output, data)
        files.add(manifest_path(output), manifest_data)
        files.commit()
    return ExportedFuse(output, manifest_path(output), manifest)


def _options(fuser) -> dict:
    schedule = fuser.schedule
    options = {"layer": fuser.layer, "init": fuser.init, "steps": schedule.steps, "lr": schedule.lr,
               "decay": schedule.decay, "mean_base": fuser.mean_base}
    if fuser.method.filtered:
        options["window"] = fuser.rule.window
    return options
