"""`mirrorppr` with slow ``os.fsync`` (fault injection for tests/test_dataset.py).

``python tests/_dataset_helpers.py build-dataset …`` runs the real command line, except that
every ``os.fsync`` first sleeps ``MIRRORPPR_TEST_FSYNC_DELAY`` seconds. Files written through
``shards.write_atomic`` then sit as their hidden ``.part`` temporary for that long before the
rename, so a test can kill the build in the middle of a shard write.

The patch is made at import: worker processes started with "spawn" re-import this file (as
``__mp_main__``), so they are slowed too.
"""

from __future__ import annotations

import os
import sys
import time

_real_fsync = os.fsync


def _slow_fsync(fd: int) -> None:
    time.sleep(float(os.environ.get("MIRRORPPR_TEST_FSYNC_DELAY", "0")))
    _real_fsync(fd)


os.fsync = _slow_fsync

if __name__ == "__main__":
    from mirrorppr_cli.cli import main

    sys.argv = ["mirrorppr", *sys.argv[1:]]
    main()
