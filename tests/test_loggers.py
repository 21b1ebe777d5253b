"""Loggers (entry-point group gn_plugin.loggers): W&B's offline run file and an MLflow file store hold the run's
scalars, evaluations and sample grids, read back with each tool's own formats; a logger that fails is named in
one line and the run goes on."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import gn_plugin
from gn_plugin.config import RECIPES, load_config
from gn_plugin.errors import GnPluginError
from gn_plugin.registry import registry
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles

TINY = [
    "train.steps=4", "train.batch_size_d=16", "train.batch_size_g=16", "train.log_every=2", "train.sample_every=4",
    "train.checkpoint_every=2", "train.sample_count=4", "train.device=cpu", "eval.every=0", "eval.num_samples=64",
    "eval.batch_size=64", "eval.metrics=[fid]", "model.width=0.25",
]


def tiny_run(run_dir: Path, loggers: str, *extra: str) -> RunFiles:
    train(load_config(RECIPES / "digits" / "gn.yaml", [*TINY, f"train.loggers={loggers}", *extra]), run_dir, progress=False)
    return RunFiles(run_dir)


def logged_scalars(files: RunFiles) -> dict[int, dict[str, float]]:
    return {record.pop("step"): record for record in files.read_scalars()}


# -- Weights & Biases, offline ----------------------------------------------------------------------
def wandb_records(path: Path):
    """The records of a W&B run file (``run-ID.wandb``): LevelDB-log framing of wandb's own protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room left for a header: the block is padded
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_holds_the_scalars_evaluations_and_sample_grids(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    files = tiny_run(tmp_path / "run", "[{name: wandb, project: gn-test}]")
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    history = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(row["_step"], {}).update(row)
    for step, scalars in logged_scalars(files).items():
        for name, value in scalars.items():
            assert history[step][name] == pytest.approx(value), (step, name)
    evaluation = {r["generator"]: r["fid"] for r in files.read_results()}
    assert history[4]["eval_raw/fid"] == pytest.approx(evaluation["raw"])
    assert history[4]["eval_ema/fid"] == pytest.approx(evaluation["ema"])
    image = history[4]["samples/raw_then_ema/path"]
    assert (run_file.parent / "files" / image).is_file() and image.endswith(".png")
    assert history[4]["samples/raw_then_ema/height"] > 2 * 64  # the raw and EMA grids, enlarged and labelled
    assert (tmp_path / "run" / "wandb-run-id").read_text() == run_file.stem.removeprefix("run-")


# -- MLflow, local file store -----------------------------------------------------------------------
def test_mlflow_file_store_holds_the_run_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    store = (tmp_path / "mlruns").as_uri()
    logger = f"[{{name: mlflow, tracking_uri: '{store}', experiment: gn-test}}]"
    files = tiny_run(tmp_path / "run", logger)
    run_id = (tmp_path / "run" / "mlflow-run-id").read_text()
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "4" and run.data.params["norm"] == "gn"
    for step, scalars in logged_scalars(files).items():
        for name in ("loss/d", "loss/g", "lr/d"):
            assert {m.step: m.value for m in client.get_metric_history(run_id, name)}[step] == pytest.approx(scalars[name])
    fid = {m.step: m.value for m in client.get_metric_history(run_id, "eval_ema/fid")}
    assert fid == {4: pytest.approx(next(r["fid"] for r in files.read_results() if r["generator"] == "ema"))}
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert any("samples_raw_then_ema" in path and path.endswith(".png") for path in images)

    # resumed to step 6, the run directory's MLflow run goes on (the same run id, steps 5 and 6 added)
    config = load_config(RECIPES / "digits" / "gn.yaml", [*TINY, f"train.loggers={logger}", "train.steps=6"])
    train(config, tmp_path / "run", resume=True, progress=False)
    assert (tmp_path / "run" / "mlflow-run-id").read_text() == run_id
    assert max(m.step for m in client.get_metric_history(run_id, "loss/d")) == 6
    assert len(client.search_runs([run.info.experiment_id])) == 1


# -- failures ---------------------------------------------------------------------------------------
class FlakyLogger:
    """Logs the first call, then raises."""

    calls: list[int] = []

    def log_scalars(self, step, scalars):
        FlakyLogger.calls.append(step)
        if len(FlakyLogger.calls) > 1:
            raise RuntimeError("tracker server went away")

    def log_image(self, step, name, image):
        pass

    def close(self):
        pass


def test_a_failing_logger_is_named_in_one_line_and_the_run_goes_on(tmp_path, monkeypatch):
    @gn_plugin.register("logger", "flaky")
    def flaky(run_dir, config, *, resume_step=None):
        return FlakyLogger()

    @gn_plugin.register("logger", "broken-start")
    def broken_start(run_dir, config, *, resume_step=None):
        raise ConnectionError("no route to the tracking server")

    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # `import wandb` fails as if it were not installed
    try:
        files = tiny_run(tmp_path / "run", "[tensorboard, wandb, flaky, broken-start]")
    finally:
        registry("logger").unregister("flaky")
        registry("logger").unregister("broken-start")
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    off = [line for line in lines if "is off for the rest of the run" in line]
    assert len(off) == 3, off
    assert any("'wandb'" in line and "pip install 'gn-plugin[wandb]'" in line for line in off)
    assert any("'broken-start'" in line and "no route to the tracking server" in line for line in off)
    assert any("'flaky'" in line and "RuntimeError: tracker server went away" in line for line in off)
    assert FlakyLogger.calls == [2, 4]  # switched off after its first failure
    assert files.read_summary()["steps"] == 4 and len(files.read_scalars()) == 2
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_logger_names_and_options_are_checked_before_the_run(tmp_path):
    with pytest.raises(GnPluginError, match="unknown logger 'wandbb'; did you mean 'wandb'"):
        load_config(RECIPES / "digits" / "gn.yaml", ["train.loggers=[wandbb]"])
    with pytest.raises(GnPluginError, match="'resume_step' cannot be an option"):
        load_config(RECIPES / "digits" / "gn.yaml", ["train.loggers=[{name: tensorboard, resume_step: 3}]"])
    saved = load_config(RECIPES / "digits" / "gn.yaml", ["train.loggers=[tensorboard, {name: wandb, project: p}]"])
    assert saved.to_dict()["train"]["loggers"] == ["tensorboard", {"name": "wandb", "project": "p"}]
