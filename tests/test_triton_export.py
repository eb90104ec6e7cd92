"""`semfuse-rt export --triton DIR`: a Triton Inference Server model repository (issue 30).

Triton's own ModelConfig message (tritonclient's model_config_pb2) is not installed here, so
the config is parsed with a message built from the fields of Triton's documented schema
(triton-inference-server/common, protobuf/model_config.proto) that a model of this kind
uses, with their names, numbers and enums as published: protobuf's text-format parser then
refuses any field name or enum value that is not Triton's."""
import hashlib
import json

import onnx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from conftest import run_main

_FIELD = descriptor_pb2.FieldDescriptorProto
# model_config.proto: ModelConfig, ModelInput, ModelOutput, ModelInstanceGroup,
# ModelTensorReshape and ModelParameter, less the fields a model without batching,
# sequences or ensembles never sets.
_MESSAGES = {
    "ModelTensorReshape": [("shape", 1, "int64", True)],
    "ModelInput": [("name", 1, "string", False), ("data_type", 2, ".inference.DataType", False),
                   ("format", 3, ".inference.ModelInput.Format", False), ("dims", 4, "int64", True),
                   ("reshape", 5, ".inference.ModelTensorReshape", False), ("is_shape_tensor", 6, "bool", False),
                   ("allow_ragged_batch", 7, "bool", False), ("optional", 8, "bool", False)],
    "ModelOutput": [("name", 1, "string", False), ("data_type", 2, ".inference.DataType", False),
                    ("dims", 3, "int64", True), ("label_filename", 4, "string", False),
                    ("reshape", 5, ".inference.ModelTensorReshape", False), ("is_shape_tensor", 6, "bool", False)],
    "ModelInstanceGroup": [("name", 1, "string", False), ("count", 2, "int32", False), ("gpus", 3, "int32", True),
                           ("kind", 4, ".inference.ModelInstanceGroup.Kind", False), ("profile", 5, "string", True),
                           ("passive", 7, "bool", False), ("host_policy", 9, "string", False)],
    "ModelParameter": [("string_value", 1, "string", False)],
    "ModelConfig": [("name", 1, "string", False), ("platform", 2, "string", False),
                    ("max_batch_size", 4, "int32", False),
                    ("input", 5, ".inference.ModelInput", True), ("output", 6, ".inference.ModelOutput", True),
                    ("instance_group", 7, ".inference.ModelInstanceGroup", True),
                    ("default_model_filename", 8, "string", False),
                    ("parameters", 14, ".inference.ModelConfig.ParametersEntry", True),
                    ("backend", 17, "string", False), ("runtime", 25, "string", False)],
}
_ENUMS = {
    "DataType": ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
                 "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING",
                 "TYPE_BF16"],
    "ModelInput.Format": ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"],
    "ModelInstanceGroup.Kind": ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"],
}
_SCALARS = {"string": _FIELD.TYPE_STRING, "int64": _FIELD.TYPE_INT64, "int32": _FIELD.TYPE_INT32,
            "bool": _FIELD.TYPE_BOOL}
# The ONNX element types of the graph's tensors, as Triton names them.
_TRITON_TYPE = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def _field(message, name, number, kind, repeated):
    field = message.field.add(name=name, number=number,
                              label=_FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL)
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type_name = kind
        field.type = _FIELD.TYPE_ENUM if kind.rsplit(".", 1)[-1] in ("DataType", "Format", "Kind") \
            else _FIELD.TYPE_MESSAGE


def _model_config_class():
    file = descriptor_pb2.FileDescriptorProto(name="triton_model_config_subset.proto", package="inference",
                                              syntax="proto3")
    messages = {}
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field in fields:
            _field(message, *field)
        messages[name] = message
    for name, values in _ENUMS.items():
        owner, _, enum_name = name.rpartition(".")
        enum = (messages[owner].enum_type if owner else file.enum_type).add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    entry = messages["ModelConfig"].nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, "string", False)
    _field(entry, "value", 2, ".inference.ModelParameter", False)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _model_config_class()


def parse_config(text: str):
    return text_format.Parse(text, ModelConfig())


def _files(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_the_schema_parser_refuses_what_triton_would():
    parse_config('name: "m" platform: "onnxruntime_onnx" max_batch_size: 0 '
                 'input [ { name: "x" data_type: TYPE_UINT8 dims: [ 2, -1 ] } ]')
    for wrong in ("max_batchsize: 0", "input [ { name: \"x\" data_type: UINT8 } ]",
                  "instance_group [ { kind: KIND_TPU } ]", "input [ { shape: [ 1 ] } ]"):
        with pytest.raises(text_format.ParseError):
            parse_config(wrong)


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def test_export_triton_writes_a_model_repository_that_matches_the_graph(monkeypatch, capsys, tmp_path):
    """The blend preset (no network: quick) for 2 images of 64 to 127 pixels, into a model
    folder that exists but is empty."""
    repository = tmp_path / "models"
    (repository / "fusion").mkdir(parents=True)
    (repository / "other_model").mkdir()
    (repository / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    code, stdout, err = run_main(monkeypatch, capsys, "export", "--triton", repository, "--model-name", "fusion",
                                 "--size", "64x64", "-q")
    assert code in (0, None), err
    assert "-> Triton model fusion in repository" in stdout
    model = repository / "fusion"
    assert _files(repository) == ["fusion", "fusion/1", "fusion/1/model.onnx", "fusion/1/model.onnx.json",
                                  "fusion/config.pbtxt", "other_model", "other_model/config.pbtxt"]
    manifest = json.loads((model / "1" / "model.onnx.json").read_text())
    graph_bytes = (model / "1" / "model.onnx").read_bytes()
    assert manifest["files"] == {"model.onnx": hashlib.sha256(graph_bytes).hexdigest()}

    config = parse_config((model / "config.pbtxt").read_text())
    assert config.name == "fusion" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
    graph = onnx.load_from_string(graph_bytes).graph
    data_type = ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type
    for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual):
            assert list(tensor.dims) == _dims(value), tensor.name
            assert data_type.values_by_number[tensor.data_type].name == \
                _TRITON_TYPE[value.type.tensor_type.elem_type], tensor.name
    assert [list(t.dims) for t in config.input] == [[2, -1, -1, 3]]
    assert [list(t.dims) for t in config.output] == [[-1, -1, 3], [-1, -1]]
    assert len(config.instance_group) == 1 and config.instance_group[0].count >= 1
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {"semfuse_rt_images": "2", "semfuse_rt_shorter_side_min": "64",
                          "semfuse_rt_shorter_side_max": "127"}
    assert manifest["shorter_side"] == [64, 127] and manifest["images"] == 2


@pytest.mark.parametrize("args, fragment", [
    (["--triton", "{tmp}/repo", "-o", "{tmp}/fuse.onnx"], "give -o or --triton, not both"),
    (["-o", "{tmp}/fuse.onnx", "--model-name", "m"], "--model-name applies to --triton"),
    ([], "give -o FILE.onnx for the graph, or --triton DIR for a Triton model repository"),
    (["--triton", "{tmp}/repo", "--model-name", "../m"], "--model-name '../m': use letters, digits"),
    (["--triton", "{tmp}/repo", "--model-name", ".m"], "--model-name '.m': use letters"),
    (["--triton", "{tmp}/repo", "--model-name", "full"], "model folder {tmp}/repo/full already exists and is not "
                                                         "empty; give another --model-name, or remove it first"),
    (["--triton", "{tmp}/repo"], "model folder {tmp}/repo/semfuse_blend already exists and is not empty"),
    (["--triton", "{tmp}/repo", "--model-name", "a_file"], "{tmp}/repo/a_file is a file, not a model folder"),
    (["--triton", "{tmp}/repo/a_file"], "--triton {tmp}/repo/a_file: is a file, not a folder"),
    (["--triton", "{tmp}/repo", "--method", "cam"], "--method cam cannot be exported"),
])
def test_bad_triton_options_are_one_line_errors_before_any_work(monkeypatch, capsys, tmp_path, args, fragment):
    repository = tmp_path / "repo"
    for name in ("full", "semfuse_blend"):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    (repository / "a_file").write_text("not a model")
    before = {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")}
    code, _, err = run_main(monkeypatch, capsys, "export", *(a.format(tmp=tmp_path) for a in args))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("semfuse-rt: error: ") and fragment.format(tmp=tmp_path) in lines[0], lines[0]
    assert {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")} == before


def test_a_failed_write_leaves_nothing_and_a_model_folder_filled_meanwhile_is_not_touched(monkeypatch, tmp_path):
    """The rename fails (here made to, for a repository whose folders the export makes): the
    temp folder and the folders it made go again. Another writer fills DIR/NAME between the
    check and the rename: the rename fails and the other's files stay."""
    import os

    from semfuse_rt.engine.deploy import triton_repository
    from semfuse_rt.engine.deploy.triton_repository import check_repository, write_repository
    from semfuse_rt.errors import SemfuseError

    files = {"config.pbtxt": b"name: 'm'\n", "1/model.onnx": b"graph"}
    model = check_repository(tmp_path / "new" / "models", "m")
    assert not (tmp_path / "new").exists()  # checked, not made

    def full_disk(source, destination):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(triton_repository.os, "rename", full_disk)
        with pytest.raises(SemfuseError, match=r"cannot write model folder .*/new/models/m \(No space left"):
            write_repository(model, files)
    assert list(tmp_path.iterdir()) == []

    model = check_repository(tmp_path / "models", "m")
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "theirs").write_text("kept")
    with pytest.raises(SemfuseError, match="cannot write model folder"):
        write_repository(model, files)
    assert _files(tmp_path) == ["models", "models/m", "models/m/theirs"]
    assert (tmp_path / "models" / "m" / "theirs").read_text() == "kept"
    assert os.listdir(tmp_path / "models") == ["m"]
