"""Entry point for `ray job submit`: train (and evaluate) one configuration on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train.py configs/jetclr_toptag.yaml --set scaling.num_workers=8

Inside a Ray job RAY_ADDRESS is set, so the trainer joins the running cluster. With
`--set tracking.run_name=NAME`, submitting the same job again after it was stopped continues
that MLflow run from its last checkpoint (or pass `--resume RUN_ID`; README "Training").
"""

import sys

from clrdist.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
