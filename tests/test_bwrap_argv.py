"""runtime.bwrap: the command line a spec turns into, checked without running anything."""

from __future__ import annotations

import itertools
from pathlib import Path

from runtime.bwrap import OPTIONS_USED, SCRATCH_DIRS, HostLayout, SandboxFds, bwrap_argv, is_within
from runtime.spec import CONNECTION_FILE, Channel, Limits, SandboxSpec

LAYOUT = HostLayout(
    symlinks=(("/bin", "usr/bin"), ("/lib", "usr/lib")),
    directories=("/usr",),
    etc_entries=("ld.so.cache", "ssl"),
)
FDS = SandboxFds(
    seccomp=10, info=11, files={"/etc/passwd": 12}, writable_files={CONNECTION_FILE: 13}
)

SCRATCH = {path: f"/run/x/scratch/{i}" for i, path in enumerate(SCRATCH_DIRS)}


def spec(**overrides: object) -> SandboxSpec:
    values: dict[str, object] = {
        "sandbox_id": "s1",
        "kernel_id": "k1",
        "argv": ("/venv/bin/python", "-m", "ipykernel_launcher", "-f", CONNECTION_FILE),
        "env": {},
        "connection_json": "{}",
        "channels": (Channel("shell", "/run/x/ch-1", 50101),),
        "state_dir": "/run/x",
        "limits": Limits(disk=1 << 20),
        "workspace": "/home/ada/notebooks",
        "read_only_paths": ("/venv",),
        "hidden_paths": ("/home/ada/notebooks/.local/share/jupyter/runtime", "/elsewhere"),
        "cwd": "/home/ada/notebooks",
    }
    values.update(overrides)
    return SandboxSpec(**values)  # type: ignore[arg-type]


def pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    """(source, dest) of every occurrence of a two-argument option."""
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_every_namespace_but_network_is_new_and_privileges_go() -> None:
    argv = bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH)
    for flag in ("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts"):
        assert flag in argv
    # The supervisor's private network namespace is shared on purpose; no --share-net needed.
    assert "--unshare-net" not in argv
    assert "--share-net" not in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--die-with-parent" in argv
    assert "--disable-userns" in argv
    assert "--new-session" in argv
    assert argv[argv.index("--seccomp") + 1] == "10"


def test_system_is_read_only_and_etc_is_an_allowlist() -> None:
    argv = bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH)
    ro = pairs(argv, "--ro-bind")
    assert ("/usr", "/usr") in ro
    assert ("/etc/ssl", "/etc/ssl") in ro
    assert not any(dest in ("/etc", "/", "/home", "/root", "/run", "/sys") for _, dest in ro)
    assert ("usr/bin", "/bin") in pairs(argv, "--symlink")
    assert argv.index("--remount-ro") < argv.index("--seccomp")
    assert argv[argv.index("--remount-ro", argv.index("--chdir")) + 1] == "/"


def test_scratch_is_bound_from_the_supervisors_capped_mounts() -> None:
    """The supervisor mounts each scratch tmpfs (size and inode caps) and bubblewrap binds it;
    /dev/shm only after --dev has made /dev."""
    argv = bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH)
    binds = pairs(argv, "--bind")
    for i, path in enumerate(("/tmp", "/var/tmp", "/home/sandbox", "/dev/shm")):
        assert (f"/run/x/scratch/{i}", path) in binds
    assert not set(itertools.pairwise(argv)) & {("--tmpfs", p) for p in SCRATCH_DIRS}
    assert argv.index("/run/x/scratch/3") > argv.index("--dev")


def test_workspace_modes() -> None:
    ws = "/home/ada/notebooks"
    assert (ws, ws) in pairs(bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH), "--ro-bind")
    assert (ws, ws) in pairs(
        bwrap_argv(spec(workspace_mode="rw"), LAYOUT, FDS, scratch=SCRATCH), "--bind"
    )
    none = bwrap_argv(spec(workspace_mode="none"), LAYOUT, FDS, scratch=SCRATCH)
    assert ws not in none[: none.index("--chdir")]


def test_staged_sources_replace_host_paths() -> None:
    argv = bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH, sources={"/venv": "/tmp/.hopx-stage/0"})
    assert ("/tmp/.hopx-stage/0", "/venv") in pairs(argv, "--ro-bind")


def test_hidden_paths_are_covered_only_inside_mounts() -> None:
    hidden = (*spec().hidden_paths, "/usr/local/etc/jupyter")
    argv = bwrap_argv(spec(hidden_paths=hidden), LAYOUT, FDS, scratch=SCRATCH)
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert "/home/ada/notebooks/.local/share/jupyter/runtime" in tmpfs
    assert "/usr/local/etc/jupyter" in tmpfs  # below the system's /usr mount
    assert "/elsewhere" not in tmpfs
    # Covered after what exposes it is mounted.
    assert argv.index("/usr/local/etc/jupyter") > argv.index("/usr")


def test_generated_files_and_command() -> None:
    argv = bwrap_argv(spec(), LAYOUT, FDS, scratch=SCRATCH)
    assert ("12", "/etc/passwd") in pairs(argv, "--ro-bind-data")
    assert ("13", CONNECTION_FILE) in pairs(argv, "--bind-data")
    assert argv[argv.index("--") + 1 :] == list(spec().argv)


def test_host_layout_detects_merged_usr(tmp_path: Path) -> None:
    root = tmp_path
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    (root / "etc" / "ssl").mkdir()
    layout = HostLayout.detect(str(root))
    assert layout.symlinks == (("/bin", "usr/bin"),)
    assert layout.directories == ("/usr",)
    assert layout.etc_entries == ("ssl",)


def test_is_within() -> None:
    assert is_within("/a/b", "/a")
    assert is_within("/a", "/a")
    assert not is_within("/ab", "/a")
    assert is_within("/tmp", "/")


def test_proc_interfaces_are_masked_after_proc_is_mounted() -> None:
    """The host's maskable /proc files get /dev/null and its directories an empty read-only
    tmpfs, right after the new /proc is mounted (earlier they would land on the host's)."""
    layout = HostLayout(
        symlinks=(),
        directories=("/usr",),
        etc_entries=(),
        proc_masked_files=("kcore", "keys"),
        proc_masked_dirs=("acpi",),
    )
    argv = bwrap_argv(spec(), layout, FDS, scratch=SCRATCH)
    proc = argv.index("--proc")
    assert argv[proc + 1] == "/proc"
    assert argv[proc + 2 : proc + 12] == [
        *("--ro-bind", "/dev/null", "/proc/kcore"),
        *("--ro-bind", "/dev/null", "/proc/keys"),
        *("--tmpfs", "/proc/acpi", "--remount-ro", "/proc/acpi"),
    ]
    assert argv[proc + 12] == "--dev"


def test_bubblewrap_runs_from_its_stage_when_it_was_staged() -> None:
    """A root supervisor stages a bubblewrap kept below /tmp (its namespace covers /tmp): the
    argv then runs the staged copy; unstaged, it runs the configured path."""
    below_tmp = spec(bwrap="/tmp/tools/bwrap")
    assert bwrap_argv(below_tmp, LAYOUT, FDS, scratch=SCRATCH)[0] == "/tmp/tools/bwrap"
    staged = bwrap_argv(
        below_tmp, LAYOUT, FDS, scratch=SCRATCH, sources={"/tmp/tools/bwrap": "/tmp/.stage/3"}
    )
    assert staged[0] == "/tmp/.stage/3"


def test_options_used_names_every_option_of_the_argv() -> None:
    """OPTIONS_USED, what the host check asks bubblewrap for, is what bwrap_argv passes."""
    argv = bwrap_argv(spec(workspace_mode="rw"), LAYOUT, FDS, scratch=SCRATCH, ptys="/run/x/pts")
    assert ("/run/x/pts", "/dev/pts") in pairs(argv, "--dev-bind")
    assert argv.index("/dev/pts") > argv.index("--dev")  # over the devpts bubblewrap mounts
    options = {a for a in argv[: argv.index("--")] if a.startswith("--")}
    assert options == set(OPTIONS_USED)
