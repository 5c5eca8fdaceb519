#!/usr/bin/env bash
# Build openpifpaf-vita 0.14.2 from its sdist into a venv, against the torch already there.
#
#   scripts/install_openpifpaf.sh [VENV]        (default .venv; `make install-openpifpaf` calls it)
#
# Why a build (docs/dependencies.md §4.2): openpifpaf has no wheel for this Python/torch. The
# sdist's setup.py hard-codes -std=c++17 while torch 2.14's headers need C++20, so we patch
# the flag; --no-build-isolation builds against the venv's own torch (an isolated build env
# would fetch another one); --no-cache-dir because pip's wheel cache is keyed by the sdist
# only and would hand back a wheel built against a different torch; --no-deps so pip never
# swaps the pinned torch/torchvision pair. Idempotent: does nothing when the same version is
# installed, built against the same torch, and its C++ decoder loads.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
PIP=("$VENV/bin/pip" --disable-pip-version-check)
VERSION=0.14.2
SDIST_SHA256=7b5e40a7c1973c48797573ada3124b1bec9c77ab219ffdcdd11da410b6315179

if [ ! -x "$PY" ]; then
  echo "install_openpifpaf: $PY not found; create the project venv first (make venv)" >&2
  exit 2
fi

# The check imports openpifpaf with the matplotlib>=3.9 shim our adapter applies, and compares
# the torch it was built against (recorded below) with the torch installed now.
check() {
  "$PY" - "$VENV" "$VERSION" <<'EOF'
import importlib.metadata as md, pathlib, sys
venv, want = sys.argv[1], sys.argv[2]
try:
    have = md.version("openpifpaf-vita")
except md.PackageNotFoundError:
    sys.exit(1)
import torch
stamp = pathlib.Path(venv) / ".openpifpaf-built-against"
if have != want or not stamp.is_file() or stamp.read_text().strip() != torch.__version__:
    sys.exit(1)
import matplotlib, matplotlib.cm
if not hasattr(matplotlib.cm, "get_cmap"):
    matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
import openpifpaf, openpifpaf.decoder  # the C++ extension loads at import
print(f"openpifpaf-vita {have} (built against torch {torch.__version__}) already installed in {venv}")
EOF
}

if check 2>/dev/null; then
  exit 0
fi

start=$(date +%s)
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
"${PIP[@]}" install --quiet 'setuptools<80' wheel
# Fetching the sdist: pip >= 26 refuses any PyPI distribution whose metadata names a direct URL
# (vita's `train` extra names pycocotools @ git+https://...), even for `download --no-deps`,
# so the download runs pip 25.2 straight from its wheel (a documented way to run pip) under the
# venv's interpreter; --no-build-isolation because preparing the metadata imports torch, which
# an isolated build env would have to fetch first. The sdist's SHA-256 is pinned.
"${PIP[@]}" download --quiet --no-deps pip==25.2 -d "$SRC"
"$PY" "$SRC/pip-25.2-py3-none-any.whl/pip" download --quiet --disable-pip-version-check --no-deps \
  --no-build-isolation --no-binary openpifpaf-vita "openpifpaf-vita==$VERSION" -d "$SRC"
echo "$SDIST_SHA256  $SRC/openpifpaf-vita-$VERSION.tar.gz" | sha256sum --check --quiet
tar xzf "$SRC/openpifpaf-vita-$VERSION.tar.gz" -C "$SRC"
DIR="$SRC/openpifpaf-vita-$VERSION"
sed -i 's/-std=c++17/-std=c++20/' "$DIR/setup.py"
grep -q -- '-std=c++20' "$DIR/setup.py" || { echo "install_openpifpaf: the c++20 patch did not apply" >&2; exit 1; }

"${PIP[@]}" uninstall --quiet -y openpifpaf-vita openpifpaf 2>/dev/null || true
"${PIP[@]}" install --quiet --no-cache-dir --no-build-isolation --no-deps "$DIR"
# its run-time requirements, minus torch/torchvision (already pinned in the venv)
"${PIP[@]}" install --quiet pysparkling python-json-logger importlib_metadata pillow
"$PY" -c 'import torch; print(torch.__version__)' > "$VENV/.openpifpaf-built-against"

check
echo "install_openpifpaf: built in $(( $(date +%s) - start )) s"
