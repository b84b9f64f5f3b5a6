"""What a test needs from the machine, checked so that it FAILS when missing.

A skipped test verifies nothing and hides a missing install step, so a test
that needs a tool calls these; the failure names the tool and the Debian
package that provides it (``./pyvswitch.sh setup`` installs them all).
"""

import importlib.util
import shutil

import pytest


def require_tools(*tools: str, package: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None
               and not shutil.which(t, path="/usr/sbin:/sbin")]
    if missing:
        pytest.fail(f"missing capability: {', '.join(missing)} (Debian package {package}; "
                    f"./pyvswitch.sh setup installs it)", pytrace=False)


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"missing capability: Python module {name} (requirements.txt; "
                    f"./pyvswitch.sh setup installs it)", pytrace=False)
