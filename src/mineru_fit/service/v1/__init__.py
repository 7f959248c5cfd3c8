"""MinerU 4's `/v1` parse API, served over the same job store, limits, token and durability as the 2.x routes.

Read from mineru==4.0.12's own server (mineru/parser/api_server.py, task_api.py): the routes,
query options, bodies, job payloads, error body and zip members its clients (`mineru-kit parse
--remote-url`, `MinerUApiParser`, `mineru-kit webui`, `mineru-kit router`) depend on.
"""

from mineru_fit.service.v1.app import OPEN_PATHS, mount_v1

__all__ = ["OPEN_PATHS", "mount_v1"]
