"""The two kernels compared: the stock local-provisioner kernel and the Hopx kernel, both running
this Python's ipykernel, from kernelspecs in a private directory (nothing installed is used)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from hopx_kernel.kernelspec import kernelspec

STOCK, HOPX = "stock", "hopx"
# The stock kernel with its channels CurveZMQ-encrypted as Hopx's are, over plain TCP: shows how
# much of Hopx's cost is the encryption alone.
STOCK_CURVE = "stock-curve"


def _stock_spec() -> dict[str, Any]:
    return {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (stock)",
        "language": "python",
    }


@contextmanager
def kernelspecs(
    hopx_settings: dict[str, Any] | None = None, extra: dict[str, dict[str, Any]] | None = None
) -> Iterator[KernelSpecManager]:
    """A KernelSpecManager that knows exactly the kernels STOCK, STOCK_CURVE and HOPX, and the
    Hopx kernels in `extra` (name: settings)."""
    with tempfile.TemporaryDirectory(prefix="hopx-bench-") as root:
        specs = {
            STOCK: _stock_spec(),
            STOCK_CURVE: {**_stock_spec(), "metadata": {"supported_encryption": "curve"}},
            HOPX: kernelspec(hopx_settings or {}, python=sys.executable),
        }
        for name, settings in (extra or {}).items():
            specs[name] = kernelspec(settings, python=sys.executable)
        for name, spec in specs.items():
            (Path(root) / "kernels" / name).mkdir(parents=True)
            (Path(root) / "kernels" / name / "kernel.json").write_text(json.dumps(spec))
        yield KernelSpecManager(kernel_dirs=[str(Path(root) / "kernels")])


def jupyter_path(specs: KernelSpecManager) -> str:
    """JUPYTER_PATH under which other programs (papermill) find the same two kernels."""
    return str(Path(specs.kernel_dirs[0]).parent)


def manager(specs: KernelSpecManager, name: str) -> KernelManager:
    encryption = "required" if name == STOCK_CURVE else "disabled"
    return KernelManager(
        kernel_name=name, kernel_spec_manager=specs, transport_encryption=encryption
    )
