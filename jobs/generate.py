"""Entry point for `ray job submit`: generate a Pythia 8 + FastJet store on the cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/generate.py top qcd --jets 1000000 --out /shared/data/toptag.zarr

The generation tasks spread over every node of the cluster (one shard per Ray task).
"""

import sys

from clrdist.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "generate", *sys.argv[1:]]))
