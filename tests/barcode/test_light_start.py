"""A ``fieldsync`` process loads OpenCV and numpy only when it scans a photo.

They are about a third of what the server and every command import; each test
server and each command of the suite, and every command an implementer types,
would pay for them without a scan in sight.  (Scans themselves are tested in
``test_barcode_scan_api.py``; the first one imports them on the decode thread.)
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("cv2", "numpy")


def loaded_after(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_the_command_line_and_the_app_start_without_the_image_stack() -> None:
    assert loaded_after("import sync.cli, sync.app; sync.cli.build_parser()") == []


def test_the_decoder_itself_still_loads_it() -> None:
    assert loaded_after("import barcode.decode") == list(HEAVY)
