"""Train a face network: ``python train.py model=teacher [key=value ...]``. See conf/train.yaml."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from facetx.training.run import train

    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))  # the value Optuna sweeps maximize


if __name__ == "__main__":
    main()
