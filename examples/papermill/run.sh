#!/usr/bin/env bash
# Run a parameterised notebook in a Hopx sandbox with papermill.
# Usage: examples/papermill/run.sh [output.ipynb]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/hello-out.ipynb}"
papermill "$here/hello.ipynb" "$out" -k hopx-python --cwd "$here" -p name "papermill"
