"""``python -m facetx.pipeline source=VIDEO model=OUT/model.int8.onnx``: see conf/pipeline/pipeline.yaml."""

import os

# passive OpenMP waits: the decode thread and two ONNX Runtime sessions share the cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from facetx.errors import exit_on_user_error  # noqa: E402
from facetx.pipeline.config import CONFIG_DIR  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pipeline")
@exit_on_user_error  # a user mistake: one line and exit code 2
def main(cfg: DictConfig) -> None:
    from facetx.pipeline.config import run

    run(cfg)


if __name__ == "__main__":
    main()
