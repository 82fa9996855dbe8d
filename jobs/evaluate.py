"""Entry point for `ray job submit`: evaluate a finished run and log into it.

    ray job submit --working-dir . -- python jobs/evaluate.py RUN_ID --lct --cwola \
        --tracking-uri sqlite:////shared/mlflow.db
"""

import sys

from clrdist.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
