"""An image verifier for the multi-host tests: it holds an import in `verifying` while a marker
file exists, so that a test can kill the host running that step at a moment it chooses."""

import os
import time
from pathlib import Path

# Longer than any test waits: a marker a failed test left behind must not hold a worker forever.
LONGEST_HOLD = 120


def hold_while_marked(path: Path | None, inspection) -> None:
    """Wait while the file MULTIHOST_HOLD_MARKER names exists; accept the image."""
    marker = os.environ.get("MULTIHOST_HOLD_MARKER", "")
    deadline = time.monotonic() + LONGEST_HOLD
    while marker and os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.1)


# It reads no byte of the image: an edge host without a copy of it inspects the staged object with
# ranged reads, and downloads nothing.
hold_while_marked.needs_file = False
