"""train.threads: the auto rule (one thread for a small model, the free cores for a large one), an explicit
count, and a user's OMP_NUM_THREADS; the chosen count is written at the start of the run."""

from __future__ import annotations

import pytest
import torch

from gn_plugin.config import RECIPES, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.training import threads
from gn_plugin.training.loop import train


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_auto_gives_small_models_one_thread_and_large_ones_the_free_cores():
    assert threads.auto_threads(300_000, cores=16, load=0.0)[0] == 1  # small: one thread even on an idle machine
    assert threads.auto_threads(4_000_000, cores=16, load=0.2)[0] == 16  # large, idle: every core
    assert threads.auto_threads(4_000_000, cores=16, load=5.6)[0] == 10  # large, 6 cores busy: the other 10
    assert threads.auto_threads(4_000_000, cores=2, load=7.0)[0] == 1  # a saturated machine: still one
    assert threads.auto_threads(4_000_000, cores=8, load=None)[0] == 8
    # the bench's jobs share the cores equally, at least one each
    assert [threads.thread_share(8, jobs) for jobs in (1, 3, 8, 20)] == [8, 2, 1, 1]


def test_the_choice_is_applied_and_omp_num_threads_is_respected(monkeypatch, restore_threads):
    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "load_average", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(threads, "cpu_cores", lambda: 2)
    choice = threads.choose_threads("auto", cpu, parameters=5_000_000)
    assert choice.threads == 2 == torch.get_num_threads() and "0 of them busy" in choice.describe()
    assert threads.choose_threads("auto", cpu, parameters=1000).threads == 1 == torch.get_num_threads()
    assert threads.choose_threads(3, cpu, parameters=1000).threads == 3 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a user's (or torchrun's) setting decides over auto
    torch.set_num_threads(1)
    choice = threads.choose_threads("auto", cpu, parameters=5_000_000)
    assert choice.threads == 1 and "OMP_NUM_THREADS=1" in choice.describe()


def test_train_threads_is_validated_and_the_count_is_written_at_start(tmp_path, monkeypatch, restore_threads):
    with pytest.raises(GnPluginError, match="train.threads"):
        load_config(RECIPES / "digits" / "gn.yaml", ["train.threads=0"])
    with pytest.raises(GnPluginError, match="train.threads"):
        load_config(RECIPES / "digits" / "gn.yaml", ["train.threads=many"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = load_config(
        RECIPES / "digits" / "gn.yaml",
        ["train.steps=2", "train.batch_size_d=8", "train.batch_size_g=8", "train.device=cpu", "eval.metrics=[]",
         "train.loggers=[]"],
    )
    train(config, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "CPU threads: 1 (auto: a small model (0.31 M parameters) runs fastest on one thread)" in log
    assert "note: train.steps=2 is short for the EMA: at step 2 the EMA generator has averaged 0.002" in log
