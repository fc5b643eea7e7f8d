"""Why a Hopx kernel did not start, in words, for every client of the REST API.

jupyter_server answers a start that failed through `POST /api/kernels` with
`{"message": "Unhandled error"}` and keeps the reason for its log (its sessions API passes the
reason on; a JupyterHub user's scripts and JupyterLab's kernel API calls see nothing). The kernel
manager's `start_kernel` is wrapped so that the failed start of a kernelspec that starts under
Hopx becomes an HTTP 500 whose message is Hopx's own, which says what to do first.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import ensure_async
from tornado import web

from hopx_kernel.kernelspec import default_provisioner_name, starts_under_hopx


class StartError(web.HTTPError):
    """An HTTP error whose str() is its message alone: jupyter_server's sessions API passes
    str(error) on as its own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def install(serverapp: Any) -> None:
    kernel_manager = serverapp.kernel_manager
    start_kernel = kernel_manager.start_kernel

    async def start_kernel_saying_why(*args: Any, **kwargs: Any) -> Any:
        try:
            return await ensure_async(start_kernel(*args, **kwargs))
        except web.HTTPError:
            raise
        except Exception as e:
            name = kwargs.get("kernel_name") or kernel_manager.default_kernel_name
            if not await _starts_under_hopx(serverapp, name):
                raise
            serverapp.log.error("Hopx kernel %s did not start", name, exc_info=True)
            raise StartError(500, str(e)) from e

    kernel_manager.start_kernel = start_kernel_saying_why


async def _starts_under_hopx(serverapp: Any, name: str) -> bool:
    try:
        # A gateway's kernelspec manager answers asynchronously.
        specs = serverapp.kernel_manager.kernel_spec_manager
        spec = await ensure_async(specs.get_kernel_spec(name))
    except (KeyError, OSError, ValueError):  # no such kernelspec (NoSuchKernel): not ours
        return False
    return starts_under_hopx(spec.metadata or {}, default_provisioner_name(serverapp))
