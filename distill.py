"""Distill the teacher into a student: ``python distill.py student=mobilevit_s``. See conf/distill.yaml."""

import hydra
from omegaconf import DictConfig

from facetx.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="distill")
@exit_on_user_error  # a user mistake: one line and exit code 2 (FACETX_TRACEBACK=1 keeps the traceback)
def main(cfg: DictConfig) -> float | None:
    from facetx.training.config_checks import check_run_config
    from facetx.training.run import distill, resume_if_requeued

    resume_if_requeued(cfg)
    check_run_config(cfg, resume_task="distill")
    metrics = distill(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
