# Every Hopx setting, with its default. Copy the ones you change into your own
# jupyter_server_config.py (or jupyter_lab_config.py / jupyterhub's single-user config).
# A kernelspec can override any of them in metadata.kernel_provisioner.config.
c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

# Memory for all the kernel's processes and its tmpfs files together; "512M", "2G"; 0 = no limit.
c.HopxProvisioner.memory_limit = "2G"
# CPU in cores (0.5 = half a core); 0 = no limit.
c.HopxProvisioner.cpu_limit = 1.0
# Processes + threads at once; stops fork bombs; 0 = no limit.
c.HopxProvisioner.pids_limit = 512
# Size of each scratch tmpfs (/tmp, /var/tmp, $HOME, /dev/shm); 0 = only memory_limit caps them.
c.HopxProvisioner.disk_limit = "1G"
# Files and directories in each scratch tmpfs; past it, "No space left on device"; 0 = no cap.
c.HopxProvisioner.files_limit = 1000000
# The notebook's folder: "ro" (read-only), "rw" (read-write) or "none" (not mounted).
c.HopxProvisioner.workspace = "ro"
# Extra host paths the kernel sees read-only, e.g. ["/srv/datasets"].
c.HopxProvisioner.read_only_paths = []
# Host paths hidden inside mounts (Jupyter's runtime and config dirs always are).
c.HopxProvisioner.hidden_paths = []
# Credential places below home folders hidden wherever a mount exposes them; [] shows them.
c.HopxProvisioner.hidden_credentials = [
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".config/gh",
    ".config/rclone", ".password-store", ".local/share/keyrings", ".terraform.d", ".netrc",
    ".git-credentials", ".pypirc", ".npmrc", ".yarnrc.yml", ".pgpass", ".my.cnf", ".boto",
    ".s3cfg", ".databrickscfg", ".vault-token",
]  # fmt: skip
# Server environment variables (fnmatch patterns) passed to the kernel; tokens never are.
c.HopxProvisioner.env_allowlist = ["LANG", "LANGUAGE", "LC_*", "TZ"]
# Start even where a limit cannot be enforced (with a warning) instead of failing.
c.HopxProvisioner.allow_unenforced_limits = False
# When the server runs as root: host uids for sandboxes, one of its own per running sandbox.
c.HopxProvisioner.sandbox_uid_range = "1879048192-1879113727"
# The block each sandbox's own address comes from (inside a private one).
c.HopxProvisioner.sandbox_network = "100.64.0.0/16"
# Outbound network: where kernels may connect to ([]: nowhere), e.g. ["preset:pypi",
# "*.example.org:443", "10.1.2.0/24:5432"], and what is refused even so.
c.HopxProvisioner.network_allow = []
c.HopxProvisioner.network_deny = []
# Every outbound attempt as a JSON line (default: hopx-connections.jsonl in Jupyter's runtime
# directory; "" logs nowhere), rotated past a size, with this many old files kept.
c.HopxProvisioner.connection_log = "/var/log/hopx/connections.jsonl"
c.HopxProvisioner.connection_log_max_size = "64M"
c.HopxProvisioner.connection_log_backups = 5
# Named secrets for the kernel's environment, e.g. {"OPENAI_API_KEY": "store:openai",
# "DB_PASSWORD": "file:/run/secrets/db"} (env:, file:, store:, exec:, aws:); none by default.
c.HopxProvisioner.secrets = {}
# The encrypted store store:NAME reads ("": hopx/secrets.json in Jupyter's data directory).
c.HopxProvisioner.secret_store = ""
# How long an exec: secret's command may take.
c.HopxProvisioner.secret_command_timeout = "10s"  # noqa: S105 - a duration, not a password
# Timeout policy (applied by the hopx_kernel server extension; max_lifetime also without a server).
# Hard cap on a kernel's age from its first start, busy or not; "8h", "90m"; 0 disables it.
c.HopxProvisioner.max_lifetime = "24h"
# Cull a kernel after this long without requests, output or finished executions; 0 disables it.
c.HopxProvisioner.idle_timeout = "1h"
# Whether a busy kernel (running a silent cell) may be culled for idleness.
c.HopxProvisioner.cull_busy = False
# How long before a cull the cull_warning event goes out (the UI shows it).
c.HopxProvisioner.warn_before = "5m"
# How often the culler looks at each kernel's activity; known deadlines are met on time anyway.
c.HopxProvisioner.cull_interval = "30s"
# Parent cgroup for the sandboxes' cgroups, relative to each hierarchy root ("" = the root).
c.HopxProvisioner.cgroup_parent = ""
# Unprivileged servers on systemd hosts: each sandbox in a delegated `systemd-run --scope`.
c.HopxProvisioner.systemd_scope = False
# Largest ZeroMQ frame (one output's data) a kernel may send; a larger one stops it ("protocol").
c.HopxProvisioner.max_frame_size = "256M"
# How long the sandbox may take to set up before the start fails.
c.HopxProvisioner.start_timeout = "30s"
# The bubblewrap executable (default: bwrap on PATH).
c.HopxProvisioner.bwrap_path = "/usr/bin/bwrap"

# The server extension (web apps started in notebooks, reached through /hopx/proxy):
# how long an app may take to begin an answer before the client gets a 504.
c.HopxExtension.proxy_timeout = "60s"
# How long a websocket to an app may carry nothing before it is closed; 0 for no bound.
c.HopxExtension.proxy_idle_timeout = "1h"
# How long a client may send nothing of its request's body, or take nothing of an answer,
# before it is cut off; 0 for no bound.
c.HopxExtension.proxy_client_timeout = "60s"
# Whether using an app counts as activity for idle_timeout (an app in use keeps its kernel).
c.HopxExtension.proxy_is_activity = True
# How long a share link lasts unless its maker says otherwise, and the most it may be asked for.
c.HopxExtension.share_link_lifetime = "1h"
c.HopxExtension.max_share_link_lifetime = "1d"
