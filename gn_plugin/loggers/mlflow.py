"""MLflow (``pip install 'gn-plugin[mlflow]'``): one MLflow run per run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import Tensor

from gn_plugin.atomic import write_atomically
from gn_plugin.loggers.base import flat_config, image_array, require_package, stored_id

#: the MLflow run id of a run directory, kept so that a resumed run continues the same MLflow run
RUN_ID_FILE = "mlflow-run-id"
#: MLflow's limits: a parameter value's length, parameters per batch
MAX_PARAM_LENGTH = 500
PARAMS_PER_BATCH = 100


class MlflowLogger:
    """Scalars as MLflow metrics and sample grids as images of one MLflow run, through ``MlflowClient``."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step) for key, value in scalars.items()])

    def log_image(self, step: int, name: str, image: Tensor) -> None:
        self.client.log_image(self.run_id, image_array(image), key=name.replace("/", "_"), step=step)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_logger(
    run_dir: Path,
    config: dict[str, Any],
    *,
    resume_step: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "gn_plugin",
    run_name: str | None = None,
) -> MlflowLogger:
    """Logger ``mlflow``: an MLflow run in ``experiment`` at ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``,
    else MLflow's), named ``run_name`` (default: the run directory's name), continued when the run resumes."""
    require_package("mlflow", "mlflow", "mlflow")
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    id_file = run_dir / RUN_ID_FILE
    run_id = stored_id(id_file)
    if run_id is None:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_id = client.create_run(experiment_id, run_name=run_name or run_dir.name).info.run_id
        params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flat_config(config).items()]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + PARAMS_PER_BATCH])
        write_atomically(id_file, lambda file: file.write(run_id.encode()))
    else:
        client.update_run(run_id, status="RUNNING")
    return MlflowLogger(client, run_id)
