"""What each rank of `ppddpm … --nproc N` runs (a script: paddle.distributed.launch starts files).
The command line comes in PPDDPM_RANK_ARGV (`ppddpm.cli.launch`)."""
import json
import os
import sys

from ppddpm.cli.main import main

sys.exit(main(json.loads(os.environ["PPDDPM_RANK_ARGV"])))
