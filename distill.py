"""Distill the teacher into a student: ``python distill.py student=mobilevit_s``. See conf/distill.yaml."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="distill")
def main(cfg: DictConfig) -> float | None:
    from facetx.training.distill import TeacherNotFoundError
    from facetx.training.run import distill
    from facetx.training.teacher_cache import TeacherCacheError

    try:
        metrics = distill(cfg)
    except (TeacherNotFoundError, TeacherCacheError) as e:
        raise SystemExit(f"error: {e}") from None
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
