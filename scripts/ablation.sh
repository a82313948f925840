#!/usr/bin/env bash
# Ablation on the embedded demo data: ICL, ICL + PMD and ICL + PMD + PFR trained with the
# same seed and budget, evaluated with lpr_eval.py (plus PMD re-ranking), written as a
# markdown table to $TABLE (default results/ablation.md). Extra arguments go to
# scripts/demo.py, e.g. --max_updates 300.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" scripts/demo.py --variants vic vic_vim vic_vim_rec --table "${TABLE:-results/ablation.md}" "$@"
