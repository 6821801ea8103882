"""``python -m facetx.pipeline source=VIDEO model=OUT/model.int8.onnx``: see conf/pipeline/pipeline.yaml."""

import hydra
from omegaconf import DictConfig

from facetx.errors import exit_on_user_error
from facetx.pipeline.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pipeline")
@exit_on_user_error  # a user mistake: one line and exit code 2
def main(cfg: DictConfig) -> None:
    from facetx.pipeline.config import run

    run(cfg)


if __name__ == "__main__":
    main()
