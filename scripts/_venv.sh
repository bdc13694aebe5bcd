# Sourced by the other scripts: makes (or reuses) the project's virtualenv and
# installs the project into it, editable, with the extras in $EXTRAS.
# ORCHESTRATOR_VENV chooses another place for it; PYTHON another interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ORCHESTRATOR_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "orchestrator needs Python 3.10 or newer; $PY is $("$PY" --version 2>&1). Set PYTHON=python3.11." >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtualenv in $VENV ..." >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)-${EXTRAS:-none}"
if [ ! -f "$STAMP" ]; then
  echo "Installing orchestrator[${EXTRAS:-}] into $VENV ..." >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[${EXTRAS:-}]" >&2
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
