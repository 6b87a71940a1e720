"""`python -m bench ...` is `titok-bench ...`; it is how torchrun starts the harness on every rank:

    torchrun --standalone --nproc_per_node 8 -m bench run --suite paper-256 --device cuda --out out/paper
"""

import sys

from bench.cli import main

sys.exit(main())
