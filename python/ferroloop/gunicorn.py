"""Gunicorn worker classes that serve an ASGI app with uvicorn on ferroloop.

Use::

    gunicorn -k ferroloop.gunicorn.UvicornWorker app:app
    gunicorn -k ferroloop.gunicorn.UvicornWorker -w 4 -b 127.0.0.1:8000 app:app

``UvicornWorker`` is uvicorn's gunicorn worker (``uvicorn.workers.UvicornWorker``) with
``loop="ferroloop:new_event_loop"``: each worker process runs its uvicorn server on a
new ``ferroloop.Loop`` (uvicorn 0.36+ takes a ``module:callable`` loop factory).
Gunicorn's other settings reach uvicorn as with uvicorn's own worker.
``UvicornH11Worker`` is the same with uvicorn's pure-Python h11 HTTP parser, like
``uvicorn.workers.UvicornH11Worker``.

Needs gunicorn and uvicorn (``pip install gunicorn uvicorn``); only gunicorn imports this
module. uvicorn deprecates the import of ``uvicorn.workers`` (it points to the separate
``uvicorn-worker`` package) with a ``DeprecationWarning``; that warning is aimed at the
importer, here this module, not at the application, so it is silenced.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="The `uvicorn.workers` module is deprecated", category=DeprecationWarning
    )
    from uvicorn import workers as _uvicorn_workers

__all__ = ("UvicornH11Worker", "UvicornWorker")

LOOP_FACTORY = "ferroloop:new_event_loop"


class UvicornWorker(_uvicorn_workers.UvicornWorker):
    """uvicorn's gunicorn worker, on ferroloop."""

    CONFIG_KWARGS: Dict[str, Any] = {
        **_uvicorn_workers.UvicornWorker.CONFIG_KWARGS,
        "loop": LOOP_FACTORY,
    }


class UvicornH11Worker(UvicornWorker):
    """uvicorn's gunicorn worker with the h11 HTTP parser, on ferroloop."""

    CONFIG_KWARGS: Dict[str, Any] = {
        **_uvicorn_workers.UvicornH11Worker.CONFIG_KWARGS,
        "loop": LOOP_FACTORY,
    }
