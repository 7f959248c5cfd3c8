#!/usr/bin/env bash
# The guide's launcher: ./start_mineru_optimized.sh sglang|vllm|api|gradio [--dry-run] [serve flags...]
#
#   sglang, vllm  start that engine with the profile the planner picks for this machine
#                 (`mineru-fit serve --engine NAME`, level auto); further flags go to serve,
#                 e.g. --vram 8, --max-model-len 2048, --dry-run, and `-- ENGINE_FLAGS` after them.
#   api, gradio   the parse API and the Gradio UI are not built yet (issue 6): exits 2.
set -euo pipefail

usage() {
    echo "usage: $0 sglang|vllm|api|gradio [--dry-run] [mineru-fit serve flags...]" >&2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$here/.venv/bin/mineru-fit" ]]; then
    mineru_fit="$here/.venv/bin/mineru-fit"
elif command -v mineru-fit >/dev/null 2>&1; then
    mineru_fit="$(command -v mineru-fit)"
else
    echo "error: mineru-fit is not installed — run 'make demo' here, or pip install mineru-fit" >&2
    exit 2
fi

if [[ $# -lt 1 ]]; then
    usage
    exit 2
fi
target="$1"
shift

case "$target" in
    sglang|vllm)
        exec "$mineru_fit" serve --engine "$target" "$@"
        ;;
    api|gradio)
        echo "error: '$target' is not built yet: the parse API and the Gradio UI arrive with issue 6 — for now start an engine with '$0 sglang' or '$0 vllm'" >&2
        exit 2
        ;;
    -h|--help)
        usage
        exit 0
        ;;
    *)
        echo "error: unknown target '$target'" >&2
        usage
        exit 2
        ;;
esac
