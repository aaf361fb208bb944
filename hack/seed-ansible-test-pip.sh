#!/usr/bin/env bash
# ansible-test bootstraps pip in each sanity venv from a file server these machines cannot reach.
# Pre-seed its cache with a stand-in that installs pip from the PyPI wheel instead.
set -euo pipefail
PY=${1:?python}
# the pip version ansible-test pins for its venvs (python_requirements.py: pip='X.Y')
PIPVER=$("$PY" - <<'PY'
import os, re, ansible_test
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
CACHE="$HOME/.ansible/test/cache"
WHEELS="$HOME/.ansible/test/pip-wheel"
mkdir -p "$CACHE" "$WHEELS"
WHEEL=$(find "$WHEELS" -maxdepth 1 -name "pip-$PIPVER-*.whl" 2>/dev/null | head -1 || true)
if [ -z "$WHEEL" ]; then
  "$PY" -m pip download -q --no-deps -d "$WHEELS" "pip==$PIPVER"
  WHEEL=$(find "$WHEELS" -maxdepth 1 -name "pip-$PIPVER-*.whl" | head -1)
fi
cat > "$CACHE/get_pip_${PIPVER//./_}.py" <<PY
import runpy, sys
sys.path.insert(0, "$WHEEL")
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel", "--no-pip")]
sys.argv = ["pip", "install", "--upgrade", "--force-reinstall"] + args
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY
echo "seeded $CACHE/get_pip_${PIPVER//./_}.py with $WHEEL"
