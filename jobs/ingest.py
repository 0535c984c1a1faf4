"""spark-submit jobs/ingest.py --config conf/local.yaml [options]: the ingest stage (see `dmf ingest --help`)."""

import sys

from dmf_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
