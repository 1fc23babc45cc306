"""The real runner under a file-size limit (``ulimit -f``): ``GROVE_FSIZE_LIMIT`` bytes. For the disk-full test."""

from __future__ import annotations

import os
import resource
import sys

from engine.runs import runner

if __name__ == "__main__":
    limit = int(os.environ["GROVE_FSIZE_LIMIT"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(runner.main())
