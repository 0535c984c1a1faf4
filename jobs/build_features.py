"""spark-submit jobs/build_features.py --config conf/local.yaml [--date D]: the feature stage (see `dmf features --help`)."""

import sys

from dmf_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))
