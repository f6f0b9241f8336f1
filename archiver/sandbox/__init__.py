"""A local stand-in for the Xplenty (Integrate.io) jobs API, for tests and demos.

    with Sandbox(jobs=2000, seed=7) as api:
        requests.get(f"{api.url}/{api.account}/api/jobs", auth=("sandbox-key", ""))

history.py generates a deterministic job history whose state follows the
sandbox clock; render.py turns it into v1/v2 payloads; resources.py renders
the catalog (packages, schedules, clusters) at the clock; server.py serves them
with rate limiting, injected faults (faults.py) and either paging reading of the
docs (link_style, offset_style). Schedules can be told to stop, packages to fail
and runs to hang (Sandbox.break_schedule, fail_package, stuck_package).
"""
from .faults import SandboxStats
from .server import Sandbox, serve

__all__ = ["Sandbox", "SandboxStats", "serve"]
