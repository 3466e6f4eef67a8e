"""Import the ``kserve`` package without it reading this process's command line.

``kserve.model_server`` parses ``sys.argv`` with argparse when it is first imported, prefixes of
its options included: `pytest --timeout=60` would set its keep-alive timeout, and an ambiguous
prefix would exit the process. Every import of kserve in this project goes through here.
"""

from __future__ import annotations

import sys


def import_kserve():
    """The ``kserve`` module, imported with ``sys.argv`` hidden from it."""
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve
        import kserve.errors
        import kserve.model_server
        import kserve.protocol.rest.server
    finally:
        sys.argv = saved
    return kserve
