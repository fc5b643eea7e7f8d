"""Lockdown, for Jupyter servers that run untrusted notebooks: the server extension
`hopx_kernel.lockdown`. While it is enabled the server

- has no terminals: a terminal runs commands on the host, outside any sandbox;
- lists and starts only kernelspecs that start under Hopx (`kernelspec.starts_under_hopx`); any
  other start is refused before a process exists, with a message saying what to pick instead;
- sends its pages LOCKDOWN_CSP, under which JupyterLab, and kernel outputs rendered in sandboxed
  frames (which inherit it), load nothing from other hosts;
- serves its files with hopx_kernel.contents.HopxContentsManager, which follows no symbolic link
  a kernel may have planted in a read-write notebook folder.

It is an extension of its own rather than a setting of the `hopx_kernel` extension because a
`jupyter_server_config.d/*.json` file, which is what `jupyter hopx install --lockdown` writes (and
what an image or a package can drop in), can only enable or disable extensions: jupyter_server
ignores every other setting in those files.

Lockdown holds or the server does not start: if it cannot be applied (a bad setting, kernels on a
Kernel Gateway, a contents manager class that follows links), the server exits, as JupyterHub's
single-user extension does when its authentication cannot be set up, instead of serving without
it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jupyter_core.paths import SYSTEM_CONFIG_PATH, jupyter_config_dir
from jupyter_server.services.security import csp_report_uri
from jupyter_server.utils import url_path_join
from traitlets import TraitError, Unicode, validate
from traitlets.config import Configurable

from hopx_kernel.kernelspec import (
    DEFAULT_NAME,
    default_provisioner_name,
    hopx_kernelspecs,
    provisioner_of,
    starts_under_hopx,
)
from hopx_kernel.start_errors import StartError

EXTENSION = "hopx_kernel.lockdown"
# The file `jupyter hopx install --lockdown` writes into a jupyter_server_config.d directory.
CONFIG_FILE = "hopx_lockdown.json"
# Key in the web application's settings saying lockdown is in force (for the REST API).
SETTING = "hopx_lockdown"

# The Content-Security-Policy of every page of a server in lockdown. JupyterLab keeps working
# under it, and so do kernel outputs rendered in `<iframe sandbox="allow-scripts" srcdoc=...>`
# frames, which inherit it; neither can make the browser fetch anything from another host.
LOCKDOWN_CSP = "; ".join(
    [
        # Whatever is not named below: this server only.
        "default-src 'self'",
        # JupyterLab's bundles come from here. Its page has an inline script, and outputs run
        # their inline scripts and eval (widgets, plotting libraries) inside their sandboxed
        # frames, so both stay allowed; loading script from elsewhere does not.
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        # JupyterLab and CodeMirror inject style elements and style attributes.
        "style-src 'self' 'unsafe-inline'",
        # The server's files, images inside notebooks and outputs (data:), and images made in the
        # page (blob:). A Markdown image from another host is not fetched.
        "img-src 'self' data: blob:",
        # JupyterLab's fonts; fonts embedded in outputs.
        "font-src 'self' data:",
        # Audio and video in outputs.
        "media-src 'self' data: blob:",
        # The REST API and the kernel websockets. CSP Level 3 lets 'self' match ws: and wss: of
        # this host too (tested in Chromium); no other host can be reached from script.
        "connect-src 'self'",
        # Frames: JupyterLab's PDF and HTML viewers (blob:), outputs' frames (srcdoc frames are
        # always allowed, and inherit this policy).
        "frame-src 'self' blob: data:",
        # Web workers, which JupyterLab and some renderers start from blob: URLs.
        "worker-src 'self' blob:",
        # No plugins.
        "object-src 'none'",
        # A <base> element cannot point relative URLs at another host.
        "base-uri 'self'",
        # Forms (the login page) post only here.
        "form-action 'self'",
        # Only this server's pages may frame these pages (jupyter_server's default).
        "frame-ancestors 'self'",
    ]
)
CSP_EXAMPLE = "default-src 'self'; img-src 'self' data:"
_DIRECTIVE = re.compile(r"[a-z][a-z-]*( [^;]*)?")


class HopxLockdown(Configurable):
    """Settings of lockdown (`c.HopxLockdown.*`); lockdown itself is on while the
    hopx_kernel.lockdown server extension is enabled."""

    content_security_policy = Unicode(
        LOCKDOWN_CSP,
        help="""The Content-Security-Policy header of the server's pages in lockdown.

        The default (hopx_kernel.lockdown.LOCKDOWN_CSP) lets JupyterLab and kernel outputs load
        and connect only to this server. Change it only to allow more, e.g. another
        frame-ancestors for a portal that embeds JupyterLab. It must name default-src.
        jupyter_server's report-uri is added unless the policy has its own, so violations show
        in the server's log.
        """,
    ).tag(config=True)

    @validate("content_security_policy")
    def _valid_policy(self, proposal: dict[str, Any]) -> str:
        policy = str(proposal["value"])
        # tornado refuses other characters in a header, and the page would go without any.
        if not all(" " <= ch <= "~" or ch == "\t" for ch in policy):
            problem = "must be one line of printable ASCII"
        else:
            directives = [" ".join(d.split()) for d in policy.split(";") if d.strip()]
            names = [d.partition(" ")[0] for d in directives]
            wrong = [d for d in directives if not _DIRECTIVE.fullmatch(d)]
            if not directives:
                problem = "is empty"
            elif wrong:
                problem = f"has {wrong[0]!r}, which is not a directive"
            elif "default-src" not in names:
                problem = "has no default-src, so it would allow whatever it does not name"
            else:
                return "; ".join(directives)
        msg = (
            f'HopxLockdown.content_security_policy {problem}; use e.g. "{CSP_EXAMPLE}" '
            "(the default is hopx_kernel.lockdown.LOCKDOWN_CSP)"
        )
        raise TraitError(msg)


class LockdownError(Exception):
    """Lockdown cannot be applied to this server."""


class KernelspecRefused(StartError):
    """A kernel start refused by lockdown: HTTP 403 with a message for people."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


def refusal_message(kernel_name: str, provisioner: str, choices: Mapping[str, str]) -> str:
    """What a refused start says: which kernelspec, why, and the Hopx kernelspecs (`choices`,
    name -> display name) to pick instead. In short lines, as JupyterLab's error dialog shows it
    preformatted."""
    lines = [
        f"Lockdown: the kernelspec {kernel_name!r} may not start on this server.",
        f"It would run outside the Hopx sandbox (its provisioner is {provisioner!r}),",
        "and this server starts only sandboxed kernels.",
    ]
    if not choices:
        lines.append(
            "No Hopx kernelspec is installed here: an admin adds one with `jupyter hopx install`."
        )
    else:
        lines.append("Pick a Hopx kernelspec instead:")
        lines += [f"- {name}: {display}" for name, display in sorted(choices.items())]
    return "\n".join(lines)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": EXTENSION}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server once its config is loaded, before it makes its managers or loads
    any extension: the terminals extension reads `terminals_enabled` when it loads."""
    with _or_exit(serverapp):
        HopxLockdown(parent=serverapp)  # a bad setting stops the server now
        serverapp.terminals_enabled = False
        serverapp.log.info("Hopx lockdown: terminals are off")
        _serve_files_without_links(serverapp)


def _serve_files_without_links(serverapp: Any) -> None:
    """The contents manager is chosen now, before the server makes it: HopxContentsManager
    unless the admin chose one; one that follows links is refused."""
    from hopx_kernel import contents  # noqa: PLC0415 - jupyter_server's contents stack

    contents.install(serverapp)
    chosen = serverapp.contents_manager_class
    if contents.follows_links(chosen):
        msg = (
            f"ServerApp.contents_manager_class is {chosen.__module__}.{chosen.__qualname__}, "
            "which follows symbolic links: in a notebook folder a kernel can write, a link the "
            "kernel made would have the server read and write files outside it. Leave the "
            f"setting unset, or set it to {contents.CLASS_NAME} (or a class built on it)"
        )
        raise LockdownError(msg)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server once its managers and web application exist, before it listens."""
    with _or_exit(serverapp):
        if serverapp.gateway_config.gateway_enabled:
            msg = (
                "kernels start on the Kernel Gateway (GatewayClient.url), where this server "
                "cannot check them; lock the gateway down instead, or unset GatewayClient.url"
            )
            raise LockdownError(msg)
        settings = HopxLockdown(parent=serverapp)
        _list_only_hopx(serverapp.kernel_spec_manager, serverapp)
        _refuse_unsandboxed(serverapp.kernel_manager, serverapp)
        _send_policy(serverapp.web_app.settings, settings.content_security_policy, serverapp.log)
        serverapp.web_app.settings[SETTING] = True
        choices = _hopx_choices(serverapp.kernel_spec_manager, serverapp)
        if not choices:
            serverapp.log.warning(
                "Hopx lockdown: no Hopx kernelspec is installed, so every kernel start will be "
                "refused; add one with `jupyter hopx install`"
            )
        elif serverapp.kernel_manager.default_kernel_name not in choices:
            # What a new notebook, or a start naming no kernelspec, gets.
            default = DEFAULT_NAME if DEFAULT_NAME in choices else min(choices)
            serverapp.kernel_manager.default_kernel_name = default
        serverapp.log.info(
            "Hopx lockdown: only Hopx kernelspecs start (%s)", ", ".join(sorted(choices))
        )


@contextlib.contextmanager
def _or_exit(serverapp: Any) -> Iterator[None]:
    """Exit the server on any failure inside: jupyter_server would log an extension's error and
    serve without it."""
    try:
        yield
    except Exception as e:
        expected = isinstance(e, (TraitError, LockdownError))
        serverapp.log.critical(
            "Hopx lockdown: %s. The server does not start without lockdown.",
            e,
            exc_info=not expected,
        )
        serverapp.exit(1)


def _list_only_hopx(kernel_spec_manager: Any, serverapp: Any) -> None:
    """Make the server's kernelspec listing (GET /api/kernelspecs, JupyterLab's launcher and
    kernel picker) hold only the kernelspecs that start under Hopx."""
    get_all_specs = kernel_spec_manager.get_all_specs

    def hopx_specs() -> dict[str, Any]:
        listing: dict[str, Any] = get_all_specs()
        hopx = hopx_kernelspecs(listing, default_provisioner_name(serverapp))
        return {name: listing[name] for name in hopx}

    kernel_spec_manager.get_all_specs = hopx_specs


def _refuse_unsandboxed(kernel_manager: Any, serverapp: Any) -> None:
    """Make the server's kernel manager refuse every start of a kernelspec that would not start
    under Hopx.

    The check runs in MultiKernelManager.pre_start_kernel, which every start goes through (POST
    /api/kernels, a session's new or changed kernel, any extension's start_kernel), after it has
    made the KernelManager and before that starts anything: no process, connection file or
    pending-kernel entry exists yet. It looks at that KernelManager's own kernel_spec, which is
    loaded once and is what the provisioner is made from, so a kernel.json changed after the
    check cannot slip past it. Restarts keep their KernelManager, checked when it started.

    It wraps the instance rather than configuring a subclass: jupyter_server chooses its kernel
    manager class (the admin's, or its own default) only after extensions are linked, and
    lockdown has to hold whichever it is. Listing-only filters such as
    KernelSpecManager.allowed_kernelspecs leave a start by name possible; this does not.
    """
    pre_start_kernel = kernel_manager.pre_start_kernel

    def checked_pre_start_kernel(kernel_name: str | None, kwargs: Any) -> tuple[Any, str, str]:
        km, name, kernel_id = pre_start_kernel(kernel_name, kwargs)
        metadata = km.kernel_spec.metadata
        default = default_provisioner_name(serverapp)
        if not starts_under_hopx(metadata, default):
            provisioner = provisioner_of(metadata, default)
            serverapp.log.warning(
                "Hopx lockdown: refused to start kernelspec %r (provisioner %s)", name, provisioner
            )
            choices = _hopx_choices(kernel_manager.kernel_spec_manager, serverapp)
            raise KernelspecRefused(refusal_message(name, provisioner, choices))
        return km, name, kernel_id

    kernel_manager.pre_start_kernel = checked_pre_start_kernel


def _hopx_choices(kernel_spec_manager: Any, serverapp: Any) -> dict[str, str]:
    """The Hopx kernelspecs to offer: name -> display name."""
    listing = kernel_spec_manager.get_all_specs()
    hopx = hopx_kernelspecs(listing, default_provisioner_name(serverapp))
    return {name: str(listing[name]["spec"].get("display_name") or name) for name in hopx}


def _send_policy(settings: dict[str, Any], policy: str, log: Any) -> None:
    """Send `policy` on every page: jupyter_server takes a Content-Security-Policy in its
    `headers` setting instead of its own (API responses add default-src 'none' to it, raw files
    a sandbox). Its report-uri is kept, relative to the base URL known only now."""
    if not {"report-uri", "report-to"} & {d.partition(" ")[0] for d in policy.split("; ")}:
        report_uri = settings.get("csp_report_uri") or url_path_join(
            settings["base_url"], csp_report_uri
        )
        policy = f"{policy}; report-uri {report_uri}"
    headers = settings.setdefault("headers", {})
    if headers.get("Content-Security-Policy") not in (None, policy):
        log.warning(
            "Hopx lockdown: replacing the Content-Security-Policy in ServerApp.tornado_settings; "
            "set HopxLockdown.content_security_policy to change lockdown's"
        )
    headers["Content-Security-Policy"] = policy


def config_dir(*, user: bool, prefix: str | None) -> str:
    """The Jupyter config directory beside a kernelspec installed with these options: the user's,
    a prefix's etc/jupyter, or the system's (as `jupyter server extension enable` picks)."""
    if user:
        return jupyter_config_dir()
    if prefix:
        return os.path.join(prefix, "etc", "jupyter")
    return SYSTEM_CONFIG_PATH[0]


def config_path(*, user: bool, prefix: str | None) -> str:
    """Where `jupyter hopx install --lockdown` enables lockdown."""
    return os.path.join(
        config_dir(user=user, prefix=prefix), "jupyter_server_config.d", CONFIG_FILE
    )


def enable(*, user: bool, prefix: str | None) -> str:
    """Enable lockdown for servers reading this config directory; returns the file written."""
    path = config_path(user=user, prefix=prefix)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    document = {"ServerApp": {"jpserver_extensions": {EXTENSION: True}}}
    staging = f"{path}.{os.getpid()}.tmp"
    with open(staging, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
    # Servers of other users read a shared prefix's config: an unreadable file would leave them
    # without lockdown.
    os.chmod(staging, 0o644)
    os.replace(staging, path)
    return path


def disable(*, user: bool, prefix: str | None) -> str | None:
    """Remove the file `enable` writes; returns it, or None if there was none."""
    path = config_path(user=user, prefix=prefix)
    try:
        os.remove(path)
    except FileNotFoundError:
        return None
    return path
