"""spark-submit jobs/embed_items.py --config conf/local.yaml: the embedding stage (see `dmf embed --help`)."""

import sys

from dmf_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
