"""Make the offline pieces available (idempotent; `make` runs it on every set-up).

--weights-from DIR  if no Keras cache has the MobileNetV2 ImageNet weights file and DIR does,
                    link it into a project-local Keras cache (.fruits/keras/models), so
                    weights="imagenet" resolves offline exactly as a warm cache would. On a
                    normal machine nothing is needed: Keras downloads the file on first use.
--s3a-jars          fetch hadoop-aws 3.3.1 + the AWS SDK bundle (needed for s3a:// outside EMR)
                    from the sagemaker-pyspark source package into .fruits/jars (git-ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.console import add_state_dir_flag, settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights-from",
        metavar="DIR",
        help="folder holding mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    )
    parser.add_argument("--s3a-jars", action="store_true", help="fetch the jars s3a:// needs into the state dir")
    add_state_dir_flag(parser)


def run(args: argparse.Namespace) -> int:
    from fruits import spark, weights

    settings = settings_from_args(args)
    if args.weights_from:
        print(weights.link_into_keras_cache(settings, Path(args.weights_from)))
    if args.s3a_jars:
        print(spark.fetch_s3a_jars(settings))
    return 0
