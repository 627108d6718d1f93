"""Local Koywe Billing API sandbox (FastAPI + uvicorn, in-memory, with fault injection).

Run it with ``python -m koywe_sandbox --help``; from tests use :func:`koywe_sandbox.testing.run_sandbox`.
Modules: ``app`` (routes and middleware), ``state`` (in-memory state and stats), ``documents`` (Koywe
document rules, flat list items), ``faults`` (fault settings, token bucket), ``clock`` (injectable
monotonic clock, sliding-window peak), ``server`` (uvicorn with a droppable h11 protocol), ``testing``
(subprocess helper and admin client). Independent of ``koywe_provider``.
"""
