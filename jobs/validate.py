"""spark-submit jobs/validate.py --config conf/local.yaml [options]: the validate stage (see `dmf validate --help`)."""

import sys

from dmf_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
