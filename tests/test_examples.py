"""The files in examples/ work as the README says they do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
from traitlets.config.loader import PyFileConfigLoader

from conftest import FOLDER_OWNER, Kernel, assert_no_leaks, cgroup_limits
from hopx_kernel.extension import HopxExtension
from hopx_kernel.provisioner import HopxProvisioner

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_kernelspec_with_custom_limits(
    start_kernel: Callable[..., Kernel], kernels_dir: Path, runtime_dir: Path
) -> None:
    shutil.copytree(EXAMPLES / "kernelspec-small", kernels_dir / "hopx-small")
    workspace = runtime_dir / "notebooks"
    workspace.mkdir()
    workspace.chmod(0o755)  # the owner writes; a root server idmaps it for the sandbox
    os.chown(workspace, FOLDER_OWNER, FOLDER_OWNER)  # read-write: never root's
    kernel = start_kernel(cwd=str(workspace), kernel_name="hopx-small")
    limits = cgroup_limits(kernel.cgroups)
    assert (limits.memory, limits.pids, limits.cpu_quota_us) == (512 << 20, 128, 50000)
    content, _ = kernel.run("open('written-by-kernel.txt', 'w').write('hi')")
    assert content["status"] == "ok"
    assert (workspace / "written-by-kernel.txt").read_text() == "hi"
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel()
    assert_no_leaks(runtime_dir)


def test_server_config_shows_every_setting_with_its_default() -> None:
    config = PyFileConfigLoader("jupyter_server_config.py", path=str(EXAMPLES)).load_config()
    shown = config.HopxProvisioner
    settings = HopxProvisioner.class_traits(config=True)
    assert set(shown) == set(settings)
    provisioner = HopxProvisioner(kernel_id="x", kernel_spec=None, parent=None)
    for name, value in shown.items():
        if name in ("bwrap_path", "connection_log"):
            continue  # the example names a path; the default depends on PATH or the runtime dir
        trait_value = getattr(HopxProvisioner(kernel_id="x", **{name: value}), name)
        assert trait_value == getattr(provisioner, name), name
    # The server extension's own settings too.
    extension = config.HopxExtension
    assert set(extension) == set(HopxExtension.class_own_traits(config=True))
    for name, value in extension.items():
        assert getattr(HopxExtension(**{name: value}), name) == getattr(HopxExtension(), name)


def test_papermill_example(make_kernelspec: Callable[..., str], runtime_dir: Path) -> None:
    make_kernelspec("hopx-python")
    output = runtime_dir / "out.ipynb"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(
        [str(EXAMPLES / "papermill" / "run.sh"), str(output)], check=True, env=env, timeout=300
    )
    notebook = nbformat.read(output, as_version=4)
    printed = [o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", [])]
    assert "hello papermill from uid 1000 on hopx\n" in printed
    assert any("hello.ipynb" in text for text in printed)
    assert_no_leaks(runtime_dir)
