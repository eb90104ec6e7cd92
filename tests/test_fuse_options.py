"""FuseOptions (engine/fuse/fuse_options.py): the one options object of a fuse. A misspelt or
bad option fails where it is written, in one line; the command line's defaults and help are
its fields'; the Ray actors and worker processes receive it whole; the Fuser's life cycle
holds a runner only while open."""
import dataclasses
import json
import pickle
import subprocess
import sys

import pytest
import typer.main

from semfuse_rt.engine import api
from semfuse_rt.engine.cli.application import load_commands
from semfuse_rt.engine.fuse.fuse_options import OWN_OPTIONS, FuseOptions, cli_fields, fuse_options
from semfuse_rt.engine.fuse.start_only import StartOnlyFuser
from semfuse_rt.errors import SemfuseError

STEPZ = "^unknown option 'stepz' \\(did you mean 'steps'\\?\\)$"


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- names and values

@pytest.mark.parametrize("make", [
    lambda: FuseOptions.from_keywords(stepz=3),
    lambda: fuse_options("max", stepz=3),
    lambda: api.make_fuser(stepz=3),
    lambda: api.make_fuser("max", steps=0, stepz=3),
    lambda: api.Fuser(stepz=3),
    lambda: api.Fuser("max", stepz=3),
], ids=["from_keywords", "fuse_options", "make_fuser", "make_fuser with others", "Fuser", "Fuser max"])
def test_a_misspelt_option_fails_at_construction_naming_the_closest(make):
    with pytest.raises(SemfuseError, match=STEPZ) as error:
        make()
    assert "'steps'" in one_line(error)


def test_a_name_no_option_is_near_lists_them_all():
    with pytest.raises(SemfuseError, match="^unknown option 'zzzzzz'; the options are ") as error:
        FuseOptions.from_keywords(zzzzzz=1)
    assert "steps" in one_line(error) and "threads" in one_line(error)  # the loaders' options too


@pytest.mark.parametrize("keywords, message", [
    (dict(steps=-1), "--steps must be a whole number from 0 to "),
    (dict(lr=0), "--lr is in pixel units and must be above 0"),
    (dict(window=4, method="majority"), "--window must be an odd number"),
    (dict(window=3), "--window applies to majority and cam-majority only, not max"),
    (dict(preset="bogus"), "unknown preset 'bogus'"),
    (dict(init="bogus"), "unknown initialisation 'bogus'"),
    (dict(decay="bogus"), "unknown learning-rate decay 'bogus'"),
    (dict(memory_budget="lots"), "--memory-budget takes a size such as 8G"),
    (dict(method="majority", steps=0), "--method majority acts only through optimisation steps"),
    (dict(method="cam", threads=2), "option 'threads' applies to the ort backend only, not cam, which runs on no "
                                    "backend"),
    (dict(method="bogus"), "unknown method 'bogus'"),
])
def test_values_are_checked_on_construction(keywords, message):
    with pytest.raises(SemfuseError) as error:
        FuseOptions.from_keywords(**keywords)
    assert one_line(error).startswith(message), one_line(error)


def test_keywords_and_given_are_the_inverse_of_from_keywords():
    options = FuseOptions.from_keywords(method="majority", steps=4, window=7, threads=2, show_progress=False)
    assert options.given() == {"steps": 4, "window": 7, "threads": 2, "show_progress": False}
    assert options.loader_options == {"threads": 2}
    assert FuseOptions.from_keywords(**options.keywords()) == options
    assert options.replace(steps=5) == FuseOptions.from_keywords(method="majority", steps=5, window=7, threads=2,
                                                                  show_progress=False)
    assert fuse_options(options) is options
    assert fuse_options(options, lr=0.5).settings.schedule.lr == 0.5


def test_settings_resolve_the_method_and_preset():
    settings = FuseOptions.from_keywords(method="max", preset="refined", steps=3).settings
    assert (settings.preset, settings.init, settings.mean_base, settings.schedule.steps) == (
        "refined", "dtcwt-verified", 8.0, 3)
    assert FuseOptions().settings.preset == "blend" and FuseOptions().settings.schedule.steps == 0


def test_the_options_module_imports_neither_torch_nor_onnxruntime():
    probe = ("import json, sys\n"
             "from semfuse_rt.engine.fuse.fuse_options import FuseOptions\n"
             "from semfuse_rt.engine.api import make_fuser\n"
             "make_fuser(FuseOptions.from_keywords(method='max', steps=0, memory_budget='2G'))\n"
             "print(json.dumps([m for m in ('torch', 'onnxruntime') if m in sys.modules]))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []


# --------------------------------------------------------------------------- the Python API takes the object

def test_make_fuser_and_fuser_take_the_object():
    options = FuseOptions.from_keywords(method="max", steps=0, show_progress=False)
    start_only = api.make_fuser(options)
    assert isinstance(start_only, StartOnlyFuser) and start_only.options is options
    fuser = api.Fuser(options, steps=2)  # keywords change the object's options, checked
    assert fuser.options == options.replace(steps=2) and fuser.schedule.steps == 2
    assert fuser.show_progress is False


def test_none_is_not_given_so_a_start_alone_is_the_start_only_fuse():
    # Before FuseOptions, a name outside the start-only options sent the fuse to the Fuser even
    # as None; None is now the field's default, and the same image comes of the start-only fuse.
    assert isinstance(api.make_fuser("max", steps=0, init="max", weights=None, layer=None), StartOnlyFuser)


def test_a_fuser_holds_a_runner_only_while_open(random_vgg_weights):
    fuser = api.Fuser("max", steps=1, backend="torch", weights=random_vgg_weights)
    assert fuser.runner is None and not fuser.is_open
    with pytest.raises(RuntimeError, match="not open"):
        fuser.active_runner
    with fuser:
        assert fuser.is_open and fuser.runner is fuser.active_runner and fuser.weights is random_vgg_weights
    assert fuser.runner is None and fuser.weights is None and not fuser.is_open


# --------------------------------------------------------------------------- the command line's options are its fields

def _commands() -> dict:
    group = typer.main.get_command(load_commands())
    return {name: group.commands[name] for name in ("fuse", "fuse-batch", "fuse-video")}


@pytest.mark.parametrize("command", ["fuse", "fuse-batch", "fuse-video"])
def test_the_fuse_commands_defaults_and_help_are_the_dataclasss(command):
    parameters = {parameter.name: parameter for parameter in _commands()[command].params}
    shown = [name for name in cli_fields() if name in parameters]
    # fuse-video's --steps are its warm frames' (its own help); every other field shows as it is.
    assert set(cli_fields()) - set(shown) == ({"tile"} if command == "fuse-video" else set())
    for name in shown:
        field = cli_fields()[name]
        assert parameters[name].default == field.default, name
        assert parameters[name].opts[0] == "--" + name.replace("_", "-")
        if not (command == "fuse-video" and name == "steps"):
            assert parameters[name].help == field.metadata["help"], name
    assert parameters["method"].default == FuseOptions().method and "-m" in parameters["method"].opts


def test_every_field_a_user_sets_has_help_or_is_said_to_have_none():
    fields = {item.name: item for item in dataclasses.fields(FuseOptions) if item.init}
    assert set(fields) == OWN_OPTIONS
    # show_progress is the CLI's --quiet; backend_options are the loaders' keywords (Python only).
    assert {name for name, item in fields.items() if not item.metadata["help"]} == {"show_progress",
                                                                                   "backend_options"}


# --------------------------------------------------------------------------- Ray actors and worker processes

def test_the_options_round_trip_through_pickling():
    options = FuseOptions.from_keywords(method="cam-majority", steps=3, window=7, classes=2, memory_budget="2G",
                                        show_progress=False)
    received = pickle.loads(pickle.dumps(options))
    assert received == options and received.settings == options.settings


def test_the_actors_receive_the_one_object(monkeypatch):
    from semfuse_rt.engine.streams import ray_session

    calls = []

    class Remote:
        def options(self, **_resources):
            return self

        def remote(self, *args, **kwargs):
            calls.append(pickle.loads(pickle.dumps((args, kwargs))))  # what Ray would ship
            return object()

    monkeypatch.setattr(ray_session, "fuser_actor_class", lambda cls=None: Remote())
    monkeypatch.setattr(ray_session, "wait_until_ready", lambda *args, **kwargs: None)
    ray_session.start_fuser_actors(2, "max", steps=2, backend="torch", threads=1)
    expected = FuseOptions.from_keywords(method="max", steps=2, backend="torch")
    assert calls == [((expected,), {"threads": 1})] * 2
    with pytest.raises(SemfuseError, match=STEPZ):  # before any actor starts
        ray_session.start_fuser_actors(1, "max", stepz=2)
    assert len(calls) == 2


def test_an_actor_holds_a_fuser_of_the_options_it_received():
    from semfuse_rt.engine.streams.ray_session import FuserActor

    options = FuseOptions.from_keywords(method="max", steps=2, backend="torch")
    actor = FuserActor(pickle.loads(pickle.dumps(options)), threads=1)
    assert actor.fuser.options == options
    assert FuserActor("max", steps=2, backend="torch").fuser.options == options  # keywords, made into one


def test_threads_go_to_the_ort_loader_only():
    from semfuse_rt.engine.streams.ray_session import pinned_options

    torch_options = FuseOptions.from_keywords(method="max", backend="torch")
    assert pinned_options(torch_options, 3) is torch_options
    assert pinned_options(FuseOptions.from_keywords(method="max", backend="ort"), 3).loader_options == {"threads": 3}
    cam = FuseOptions.from_keywords(method="cam")
    assert pinned_options(cam, 3) is cam
