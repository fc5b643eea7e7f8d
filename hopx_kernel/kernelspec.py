"""The "Python 3 (Hopx sandbox)" kernelspec: build it, validate its settings, install it; and the
rule that tells which kernelspecs start under Hopx."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory

from hopx_kernel.provisioner import HopxProvisioner

DEFAULT_NAME = "hopx-python"
DEFAULT_DISPLAY_NAME = "Python 3 (Hopx sandbox)"
PROVISIONER_NAME = "hopx-provisioner"


def provisioner_of(metadata: Mapping[str, Any], default: str) -> str:
    """The provisioner a kernelspec with this `metadata` starts under, decided as jupyter_client's
    KernelProvisionerFactory decides it: the `provisioner_name` its `kernel_provisioner` stanza
    names, else `default` (the factory's `default_provisioner_name`)."""
    stanza = metadata.get("kernel_provisioner")
    if isinstance(stanza, Mapping) and "provisioner_name" in stanza:
        return str(stanza["provisioner_name"])
    return default


def starts_under_hopx(metadata: Mapping[str, Any], default: str) -> bool:
    """Whether a kernelspec with this `metadata` starts sandboxed, `default` being the
    provisioner of kernelspecs that name none (a farm may make that Hopx for all)."""
    return provisioner_of(metadata, default) == PROVISIONER_NAME


def hopx_kernelspecs(listing: Mapping[str, Any], default: str) -> list[str]:
    """The names, sorted, of the kernelspecs in `listing` (as KernelSpecManager.get_all_specs()
    gives it) that start under Hopx."""
    return sorted(
        name
        for name, model in listing.items()
        if starts_under_hopx(model["spec"].get("metadata") or {}, default)
    )


def default_provisioner_name(parent: Any) -> str:
    """The provisioner of kernelspecs that name none, from the factory every KernelManager of
    `parent`'s application asks (a singleton, configured like the application)."""
    return str(KernelProvisionerFactory.instance(parent=parent).default_provisioner_name)


def validate_settings(settings: dict[str, Any]) -> None:
    """Raise the error a kernel start would raise for these provisioner settings, now."""
    HopxProvisioner(kernel_id="validate", kernel_spec=None, parent=None, **settings)


def kernelspec(
    settings: dict[str, Any] | None = None,
    *,
    display_name: str = DEFAULT_DISPLAY_NAME,
    python: str = sys.executable,
) -> dict[str, Any]:
    """The kernel.json document for an ipykernel sandboxed by Hopx with `settings`."""
    settings = dict(settings or {})
    validate_settings(settings)
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {
            "debugger": True,
            "supported_encryption": "curve",
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": settings},
        },
    }


def install(
    settings: dict[str, Any] | None = None,
    *,
    name: str = DEFAULT_NAME,
    display_name: str = DEFAULT_DISPLAY_NAME,
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install the kernelspec; returns the directory it went to."""
    spec = kernelspec(settings, display_name=display_name)
    with tempfile.TemporaryDirectory() as staging:
        # The copy keeps the mode, and a temporary directory is 0700: a kernelspec installed
        # into a shared prefix must be readable by every user whose server lists it.
        os.chmod(staging, 0o755)  # noqa: S103 - world-readable on purpose, see above
        with open(os.path.join(staging, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=2)
        _copy_logos(staging)
        return str(
            KernelSpecManager().install_kernel_spec(
                staging, kernel_name=name, user=user, prefix=prefix, replace=True
            )
        )


def _copy_logos(destination: str) -> None:
    """The launcher shows the Python logo, as for the stock kernel."""
    try:
        import ipykernel  # noqa: PLC0415 - only needed here, and slow to import
    except ImportError:
        return
    resources = os.path.join(os.path.dirname(ipykernel.__file__), "resources")
    for name in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
        source = os.path.join(resources, name)
        if os.path.exists(source):
            shutil.copy(source, destination)
