"""What each rank of `ppddpm … --nproc N` runs (a script: paddle.distributed.launch starts files).
The command line comes in PPDDPM_RANK_ARGV (`ppddpm.cli.launch`)."""
import json
import os
import sys

from ppddpm.__main__ import run

sys.exit(run(json.loads(os.environ["PPDDPM_RANK_ARGV"])))
