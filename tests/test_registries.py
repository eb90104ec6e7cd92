"""The registries of backends, fusion rules, start images, presets and methods (issue 29,
item 3): each lists what registered, an unknown name is one line that names the closest valid
one, and the help text and lookups follow what is registered, a new entry included."""
import re

import pytest

from conftest import run_main
from semfuse_rt.engine.backends import (BACKEND_REGISTRY, BACKENDS, Backend, backend_help, create_runner,
                                        register_backend, resolve_backend)
from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.engine.fuse.methods import METHODS, Method, get_method, method_help, register_method
from semfuse_rt.engine.fuse.presets import PRESETS, Preset, preset_help, register_preset, resolve_preset
from semfuse_rt.engine.start.initialisation import STARTS, check_initialisation
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.rules import RULES, feature_rule, register_rule


def test_the_registries_list_what_registered():
    assert BACKEND_REGISTRY.names() == ("trt", "cuda", "ort", "torch")  # the order of preference
    assert list(BACKENDS) == ["auto", "trt", "cuda", "ort", "torch"]
    assert RULES.names() == ("max", "majority")
    assert STARTS.names() == ("mean", "max", "dtcwt", "dtcwt-verified", "pyramid-blend", "whole-pyramid-blend")
    assert PRESETS.names() == ("blend", "blend-steps", "exposure", "semantic", "paper", "refined", "fast")
    assert METHODS.names() == ("max", "majority", "cam", "cam-max", "cam-majority")
    for registry in (BACKEND_REGISTRY, RULES, STARTS, PRESETS, METHODS):
        assert all(entry.name == name for name, entry in registry.items())


def test_each_backend_names_its_loader_and_runner():
    for backend in BACKEND_REGISTRY.values():
        assert issubclass(backend.runner_class(), FusionRunner)
        assert backend.loader_class().__module__ == f"{backend.package}.loader"
        assert backend.summary and backend.requires
    assert [name for name, backend in BACKEND_REGISTRY.items() if backend.gpu_only] == ["trt", "cuda"]


def test_each_rule_module_defines_its_rule_and_the_methods_name_registered_rules():
    for name, entry in RULES.items():
        rule = feature_rule(name, 3)
        assert rule.name == name and type(rule).__module__ == entry.module
        assert entry.windowed == hasattr(rule, "window")
    assert {method.rule for method in METHODS.values()} - {None} <= set(RULES)
    assert [m.name for m in METHODS.values() if m.filtered] == ["majority", "cam-majority"]


@pytest.mark.parametrize("look_up, message", [
    (lambda: resolve_backend("ortt"), "unknown backend 'ortt' (did you mean 'ort'?); use one of auto, trt, cuda, "
                                      "ort, torch"),
    (lambda: feature_rule("majorty"), "unknown fusion rule 'majorty' (did you mean 'majority'?); use one of max, "
                                      "majority"),
    (lambda: check_initialisation("pyramid-blnd"), "unknown initialisation 'pyramid-blnd' (did you mean "
                                                   "'pyramid-blend'?); use one of mean, max, dtcwt, dtcwt-verified, "
                                                   "pyramid-blend, whole-pyramid-blend"),
    (lambda: resolve_preset("fats"), "unknown preset 'fats' (did you mean 'fast'?); use one of blend, blend-steps, "
                                     "exposure, semantic, paper, refined, fast"),
    (lambda: get_method("cam-mx"), "unknown method 'cam-mx' (did you mean 'cam-max'?); use one of max, majority, "
                                   "cam, cam-max, cam-majority"),
    (lambda: resolve_backend("tensorflow"), "unknown backend 'tensorflow'; use one of auto, trt, cuda, ort, torch"),
], ids=["backend", "rule", "start", "preset", "method", "nothing close"])
def test_an_unknown_name_is_one_line_naming_the_closest(look_up, message):
    with pytest.raises(SemfuseError) as error:
        look_up()
    assert str(error.value) == message


def test_an_unknown_backend_on_the_command_line_names_the_closest(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "fuse", "a.png", "b.png", "-o", tmp_path / "c.png",
                            "--backend", "tourch")
    assert code != 0 and "Traceback" not in err
    assert "unknown backend 'tourch' (did you mean 'torch'?)" in err


@pytest.fixture
def registered():
    """registered(registry, name): take the test's entry out of the registry after the test."""
    added = []
    yield lambda registry, name: added.append((registry, name))
    for registry, name in added:
        registry.unregister(name)


def test_a_registered_preset_is_in_the_help_and_resolves(registered):
    assert preset_help().startswith("blend: a pyramid blend") and "; fast: 10 steps from the DT-CWT" in preset_help()
    register_preset(Preset("gentle", "five soft steps from the mean", init="mean", steps=5, lr=0.05, decay="cosine",
                           mean_base=0.0))
    registered(PRESETS, "gentle")
    assert preset_help().endswith("; gentle: five soft steps from the mean")
    assert resolve_preset("gentle", lr=0.2) == {"init": "mean", "steps": 5, "lr": 0.2, "decay": "cosine",
                                                "mean_base": 0.0, "semantic_steps": 0}


def test_a_registered_backend_is_in_the_help_and_makes_its_runner(registered, random_vgg_weights):
    torch_backend = BACKEND_REGISTRY["torch"]
    again = Backend(name="torch-again", package=torch_backend.package, loader=torch_backend.loader,
                    runner=torch_backend.runner, summary="torch once more", requires="torch", gpu_only=False,
                    usable=lambda layer: True, on_gpu=lambda: False)
    register_backend(again)
    registered(BACKEND_REGISTRY, "torch-again")
    assert "torch-again" in BACKENDS and list(BACKENDS)[-1] == "torch-again"
    assert backend_help().endswith("; torch-again: torch once more.")
    assert resolve_backend("torch-again") == "torch-again"
    runner = create_runner("torch-again", random_vgg_weights, "relu1_1")
    assert type(runner) is torch_backend.runner_class()


def test_a_registered_rule_and_method_are_found_by_name(registered):
    register_rule("max-again", "semfuse_rt.kernels.rules.choose_max")
    registered(RULES, "max-again")
    register_method(Method("max-again", "max-again", False))
    registered(METHODS, "max-again")
    assert type(feature_rule("max-again")).__name__ == "ChooseMax"
    assert method_help().endswith(" | cam-majority | max-again")
    assert get_method("max-again").optimised and not get_method("max-again").filtered


def test_the_command_help_is_built_from_the_registries(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "fuse", "--help")
    assert code == 0
    text = re.sub(r"[\s│]+", " ", out)
    for preset in PRESETS.values():
        assert f"{preset.name}: {preset.description}" in text
    for backend in BACKEND_REGISTRY.values():
        assert f"{backend.name}: {backend.summary}" in text
    assert " | ".join(METHODS) in text and " | ".join(STARTS) in text
