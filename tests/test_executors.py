"""The executors of engine/streams/executors.py by name: every registered one runs the same work
to the same results, as completed or in order (item i on worker i mod N), a worker that
dies fails only its item, and an unknown name is one line naming the valid ones."""
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import pytest

from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.streams.batch import BatchPlan, FuseImages, run_batch
from semfuse_rt.engine.streams.executor_registry import EXECUTORS, executor_named
from semfuse_rt.errors import SemfuseError

HAS_RAY = importlib.util.find_spec("ray") is not None
NAMES = sorted(EXECUTORS)


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module, which the ray executor's session uses as it is."""
    if not HAS_RAY:
        yield None
        return
    import sys

    from ray import cloudpickle

    from semfuse_rt.engine.streams.ray_session import ray_session

    # Ray's workers do not have tests/ on their path: this module's Work goes by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with ray_session(num_cpus=2) as session:
        yield session


def executor(name: str, workers: int, request):
    if name == "ray":
        if not HAS_RAY:
            pytest.skip("Ray is not installed (the ray extra)")
        request.getfixturevalue("local_ray")  # started only for Ray's cases
    return EXECUTORS[name](workers)


@dataclass(frozen=True)
class Squares:
    """A Work whose result also names the worker that ran the item (pinning is observable)."""

    name: str = "squares"
    exit_on: int | None = None  # an item on which the worker's process dies

    def start(self, slot: int, threads: int | None) -> "_Squarer":
        return _Squarer(slot, self.exit_on)


@dataclass
class _Squarer:
    slot: int
    exit_on: int | None

    def ready(self) -> bool:
        return True

    def run(self, item: int) -> tuple[int, int]:
        if item == self.exit_on:
            os._exit(3)
        return item * item, self.slot

    def close(self) -> None:
        pass


def test_an_unknown_executor_is_one_line_naming_the_valid_ones():
    with pytest.raises(SemfuseError) as raised:
        executor_named("fibres")
    assert str(raised.value) == "unknown executor 'fibres': use one of processes, ray, threads"
    with pytest.raises(SemfuseError, match="unknown executor 'fibres': use one of processes, ray, threads"):
        run_batch(BatchPlan([], []), executor="fibres")


def test_every_executor_is_registered_by_its_name():
    assert NAMES == ["processes", "ray", "threads"]
    assert all(EXECUTORS[name].name == name for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_in_order_each_worker_takes_every_nth_item_and_results_come_in_order(name, request):
    items = list(range(11))
    # Two workers: the local Ray instance of the tests has room for two actors.
    done = list(executor(name, 2, request).run(Squares(), items, in_order=True))
    assert [each.index for each in done] == items and all(each.ok for each in done)
    assert [each.result for each in done] == [(item * item, item % 2) for item in items]


@pytest.mark.parametrize("name", NAMES)
def test_as_completed_every_item_comes_back_once(name, request):
    items = list(range(11))
    done = list(executor(name, 2, request).run(Squares(), iter(items), in_order=False))
    assert sorted(each.index for each in done) == items
    assert all(each.ok and each.result[0] == each.item * each.item for each in done)


@pytest.mark.parametrize("name", NAMES)
def test_every_executor_fuses_the_same_images_to_the_same_pixels(name, request, weights_file):
    options = {"backend": "torch", "weights": weights_file, "steps": 2}
    rng = np.random.default_rng(29)
    pairs = [[rng.integers(0, 256, (48, 40), dtype=np.uint8) for _ in range(2)] for _ in range(3)]
    with Fuser("max", **options) as fuser:
        expected = [fuser(pair).image for pair in pairs]
    work = FuseImages("max", options)
    done = sorted(executor(name, 2, request).run(work, [(None, pair) for pair in pairs], in_order=False),
                  key=lambda each: each.index)
    assert [each.result[1] for each in done] == [None] * 3, [each.result[1] for each in done]
    assert all(np.array_equal(each.result[0], image) for each, image in zip(done, expected))


def test_a_worker_process_that_dies_fails_its_item_and_the_other_worker_goes_on():
    done = list(EXECUTORS["processes"](2).run(Squares(exit_on=4), range(9), in_order=False))
    failed = [each for each in done if not each.ok]
    assert sorted(each.index for each in done) == list(range(9))
    assert [(each.item, each.failure) for each in failed] == [(4, "the worker fusing it stopped (exit status 3)")]
    assert all(each.result[0] == each.item * each.item for each in done if each.ok)


def test_settings_of_ray_given_to_a_local_executor_are_one_line():
    from semfuse_rt.engine.streams.executors import RaySettings

    with pytest.raises(SemfuseError, match="apply to the ray executor, not to threads"):
        EXECUTORS["threads"](2, ray=RaySettings(address="auto"))
