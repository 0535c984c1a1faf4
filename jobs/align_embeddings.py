"""spark-submit jobs/align_embeddings.py --config conf/local.yaml: the alignment stage (see `dmf align --help`)."""

import sys

from dmf_features.cli import main

if __name__ == "__main__":
    sys.exit(main(["align", *sys.argv[1:]]))
