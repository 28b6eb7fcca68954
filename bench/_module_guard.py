"""What the helper modules of bench/learning.py do when run as a script: one ``error:`` line
pointing to the real script, exit code 2 (a script run has bench/ on ``sys.path``, not the bench
package, so their ``from bench...`` imports would die with a traceback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn


def refuse_script_run(path: str) -> NoReturn:
    """Exit 2 with the error line for module file ``path``."""
    print(
        f"error: bench/{Path(path).name} is a module used by bench/learning.py, not a script; "
        "run `python bench/learning.py --help`",
        file=sys.stderr,
    )
    sys.exit(2)
