"""Make `import transforms` find the package, not this test directory.

pytest (prepend import mode, no __init__.py files) puts `tests/` on sys.path, where `transforms`
is this directory, a namespace package that would shadow the real one. With the project root on
sys.path too, the regular package wins. `pythonpath = ["."]` in pytest's configuration would do
the same for every test directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
