"""Join a group from the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), report, leave.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=PORT python dist_init.py TIMEOUT_S

Prints ``joined rank R of W sum S`` after an all_reduce, or lets the error end the process.
"""

from __future__ import annotations

import sys

import ember.distributed as edist

if __name__ == "__main__":
    edist.initialize("gloo", timeout=float(sys.argv[1]))
    try:
        total = edist.all_reduce(1)
        print(f"joined rank {edist.get_rank()} of {edist.get_world_size()} sum {total}", flush=True)
    finally:
        edist.finalize()
