"""Find the checkpoints ``make bench`` exports: the newest teacher and the newest distilled default student.

``python -m facetx.export.locate teacher|student [--root outputs]`` prints the path (or prints a one-line error and
exits with code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from facetx.errors import ConfigError, UserError, print_user_error
from facetx.training.checkpoint import CheckpointNotFoundError, newest_checkpoint

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def default_student() -> str:
    """The ``student`` choice in conf/distill.yaml's defaults list (the default student)."""
    path = CONF_DIR / "distill.yaml"
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
        if isinstance(entry, dict) and "student" in entry:
            return str(entry["student"])
    raise ConfigError(f"{path}: no 'student' entry in the defaults list (expected e.g. '- student: tiny')")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("teacher", "student"))
    parser.add_argument("--root", default="outputs", help="the runs' log_dir (paths.log_dir)")
    args = parser.parse_args(argv)
    try:
        if args.which == "teacher":
            path = newest_checkpoint(Path(args.root) / "train", "train", "teacher")
        else:
            path = newest_checkpoint(Path(args.root) / "distill", "distill", default_student())
    except UserError as e:
        hint = "python train.py model=teacher" if args.which == "teacher" else "python distill.py"
        what = CheckpointNotFoundError(
            f"locate {args.which}: {e}; run `{hint}` first or pass the checkpoint explicitly"
        )
        return print_user_error(what)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
