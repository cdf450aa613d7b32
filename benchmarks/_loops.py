"""What the benchmark scripts need to know about the loops they compare.

Shared by ``micro.py`` and ``seed_demo.py`` (both run as scripts from this directory).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform


def loop_version(name: str) -> str:
    """Version string of loop ``name`` ("asyncio", "uvloop" or "ferroloop").

    For ferroloop it also says when the extension module was built, since benchmarks of a
    development checkout are only comparable for the same build.
    """
    if name == "asyncio":
        return "stdlib " + platform.python_version()
    mod = __import__(name)
    ver = getattr(mod, "__version__", None)
    if ver is None:
        try:
            from importlib.metadata import version

            ver = version(name)
        except Exception:
            ver = "?"
    ext = getattr(mod, "_ferroloop", None)
    if name == "ferroloop" and getattr(ext, "__file__", None):
        built = _dt.datetime.fromtimestamp(os.path.getmtime(ext.__file__))
        ver = f"{ver} (built {built:%Y-%m-%d %H:%M})"
    return str(ver)
