"""Train a face network: ``python train.py model=teacher [key=value ...]``. See conf/train.yaml."""

import hydra
from omegaconf import DictConfig

from facetx.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error  # a user mistake: one line and exit code 2 (FACETX_TRACEBACK=1 keeps the traceback)
def main(cfg: DictConfig) -> float | None:
    from facetx.training.config_checks import check_run_config
    from facetx.training.run import resume_if_requeued, train

    resume_if_requeued(cfg)
    check_run_config(cfg, resume_task="train")
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))  # the value Optuna sweeps maximize


if __name__ == "__main__":
    main()
