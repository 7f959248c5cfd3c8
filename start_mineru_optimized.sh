#!/usr/bin/env bash
# The guide's launcher: ./start_mineru_optimized.sh sglang|vllm|api|gradio [--dry-run] [flags...]
#
#   sglang, vllm  start that engine with the profile the planner picks for this machine
#                 (`mineru-fit serve --engine NAME`, level auto); further flags go to serve,
#                 e.g. --vram 8, --max-model-len 2048, --dry-run, and `-- ENGINE_FLAGS` after them.
#   api, gradio   the parse API (port 8000) or the Gradio UI with the API beside it (port 7860),
#                 with an engine fitted to this machine (`mineru-fit start api|gradio`); further
#                 flags go there, e.g. --port, --data-dir, --server URL, --engine, --dry-run.
#                 Without a model here they parse with the flash tier (no GPU needed).
set -euo pipefail

usage() {
    echo "usage: $0 sglang|vllm|api|gradio [--dry-run] [mineru-fit serve / start flags...]" >&2
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
        exec "$mineru_fit" start "$target" "$@"
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
