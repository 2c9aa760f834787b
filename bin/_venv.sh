# shellcheck shell=bash
# Sourced by bin/dev and bin/test: create or reuse .venv and install the project into it
# when pyproject.toml changed since the last install. Expects cwd = repo root.

garda_die() { echo "garda: $*" >&2; exit 1; }

garda_python_ok() {  # $1: interpreter; true if it runs and is >= 3.11
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

garda_find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python; do
    if command -v "$candidate" >/dev/null 2>&1 && garda_python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

garda_venv() {
  local venv=.venv stamp=.venv/.garda-install-stamp want have py
  if [ -e "$venv" ] && ! garda_python_ok "$venv/bin/python"; then
    echo "garda: $venv is broken or older than Python 3.11; recreating it" >&2
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    py=$(garda_find_python) || garda_die "Python 3.11 or newer is required (looked for \$PYTHON, python3, python3.13, python3.12, python3.11). Install it, or set PYTHON=/path/to/python3.11+."
    echo "garda: creating $venv with $py ($("$py" --version 2>&1))" >&2
    "$py" -m venv "$venv" \
      || garda_die "could not create $venv (on Debian/Ubuntu: apt install python3-venv)"
  fi
  # The stamp is the hash of pyproject.toml plus the repo path (editable installs are absolute).
  want=$("$venv/bin/python" -c 'import hashlib, os, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + os.getcwd().encode()).hexdigest())')
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" != "$have" ] || ! "$venv/bin/python" -P -c 'import importlib.metadata as m; m.version("garda")' >/dev/null 2>&1; then
    echo "garda: installing the project into $venv (pyproject.toml changed or first run)" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
      "$venv/bin/python" -m pip install --quiet -e '.[test]' \
      || garda_die "pip install -e '.[test]' failed (see above)"
    echo "$want" > "$stamp"
  fi
}
