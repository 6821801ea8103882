"""Export a trained network: ``python export.py ckpt_path=DIR/checkpoints/last.ckpt``. See conf/export.yaml."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from facetx.export.pipeline import export

    export(cfg)


if __name__ == "__main__":
    main()
