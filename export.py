"""Export a trained network: ``python export.py ckpt_path=DIR/checkpoints/last.ckpt``. See conf/export.yaml."""

import os

# torch's OpenMP workers spin-wait at barriers by default; on a loaded CPU that turns a 15 ms forward pass into
# hundreds of ms. Passive waiting keeps the benchmark honest there (export OMP_WAIT_POLICY=ACTIVE to override).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from facetx.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@exit_on_user_error  # a user mistake: one line and exit code 2 (FACETX_TRACEBACK=1 keeps the traceback)
def main(cfg: DictConfig) -> None:
    from facetx.export.pipeline import export
    from facetx.training.config_checks import check_run_config

    check_run_config(cfg)
    export(cfg)


if __name__ == "__main__":
    main()
