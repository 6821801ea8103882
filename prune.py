"""Prune a distilled student and recover it by distillation: ``python prune.py prune.ckpt_path=... prune.ratio=0.5``.

See conf/prune.yaml.
"""

import hydra
from omegaconf import DictConfig

from facetx.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="prune")
@exit_on_user_error  # a user mistake: one line and exit code 2 (FACETX_TRACEBACK=1 keeps the traceback)
def main(cfg: DictConfig) -> float | None:
    from facetx.training.config_checks import check_run_config
    from facetx.training.pruning import prune_and_distill

    check_run_config(cfg)  # the resume check (ckpt_path) needs the pruned model_name: prune_and_distill runs it
    metrics = prune_and_distill(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
