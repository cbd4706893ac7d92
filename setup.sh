#!/usr/bin/env bash
# Creates the virtual environment .venv and installs everything, idempotently: a second run with unchanged
# requirements only checks a stamp and exits.
#   bash setup.sh          runtime dependencies (CPU torch without CUDA; CUDA torch + optional flash-attn with it)
#   bash setup.sh --llamacpp  also llama.cpp (requirements-llamacpp.txt, built from source) and its GGUF converter
#   bash setup.sh --dev    also the test requirements (requirements-dev.txt), the system tools the tests use
#                          (tesseract OCR, curl; via apt-get, needs root) and llama.cpp
# The project is installed into the environment in editable mode (pip install -e .).
# Environment: VENV (default .venv), PYTHON (default python3), SKIP_FLASH_ATTN=1 to never try flash-attn.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEV=0
LLAMACPP=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1; LLAMACPP=1 ;;
    --llamacpp) LLAMACPP=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

TORCH_VERSION=$(sed -n 's/^torch==//p' requirements.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  DEVICE=cuda
else
  DEVICE=cpu
fi

packages=()
# A Debian/Ubuntu python3 without ensurepip cannot create the environment: its pythonX.Y-venv package can.
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  packages+=("python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
fi
if [ "$DEV" = 1 ]; then
  command -v tesseract >/dev/null 2>&1 || packages+=(tesseract-ocr tesseract-ocr-eng)  # the legibility tests
  command -v curl >/dev/null 2>&1 || packages+=(curl)  # the API tests and demo.sh
fi
# llama-cpp-python compiles llama.cpp (cmake comes from PyPI as a build requirement; the compiler does not).
[ "$LLAMACPP" = 1 ] && ! command -v g++ >/dev/null 2>&1 && packages+=(g++)
if [ ${#packages[@]} -gt 0 ]; then
  echo "[setup] installing ${packages[*]} with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.setup-stamp"
hash=$(cat requirements*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
want="$DEVICE $hash $DEV $LLAMACPP"
# Up to date when the same files were installed for this device with at least these extras (a --dev set-up serves
# a plain `bash setup.sh`, as demo.sh runs it).
if [ -f "$stamp" ] && read -r s_device s_hash s_dev s_llamacpp < "$stamp" && [ "$s_device $s_hash" = "$DEVICE $hash" ] \
    && [ "${s_dev:-0}" -ge "$DEV" ] && [ "${s_llamacpp:-0}" -ge "$LLAMACPP" ]; then
  echo "[setup] $VENV is up to date ($DEVICE); nothing to do"
  exit 0
fi

"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  if [ "$DEVICE" = cuda ]; then
    echo "[setup] installing torch $TORCH_VERSION (CUDA build)"
    "$PY" -m pip install -q "torch==$TORCH_VERSION"
  else
    # Never pull the multi-GB CUDA build onto a machine without a GPU: ask for the +cpu wheel explicitly.
    echo "[setup] installing torch $TORCH_VERSION (CPU build)"
    # A +cpu wheel already reachable (a local wheelhouse or pip config) first, else PyTorch's CPU index.
    "$PY" -m pip install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || "$PY" -m pip install -q "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

echo "[setup] installing requirements.txt$([ "$DEV" = 1 ] && echo ' and requirements-dev.txt')"
"$PY" -m pip install -q -r requirements.txt $([ "$DEV" = 1 ] && echo "-r requirements-dev.txt")
# The project itself, editable: `from inference import DeepSeekSummarizer` works from any folder, and the
# commands keep their `python -m` names. Its dependencies are the pins just installed.
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip check

if [ "$LLAMACPP" = 1 ]; then
  # llama.cpp's native CPU detection (GGML_NATIVE) built a library that crashed with an illegal instruction on Q8_0
  # on CPUs that report AMX: the instruction sets this CPU reports are named explicitly instead, AMX off.
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  has() { case " $flags " in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
  cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)"
  cmake_args+=" -DGGML_F16C=$(has f16c) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)"
  cmake_args+=" -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)"
  cmake_args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  [ "$DEVICE" = cuda ] && cmake_args+=" -DGGML_CUDA=ON"
  echo "[setup] installing llama-cpp-python (builds llama.cpp from source, about 10 min the first time)"
  CMAKE_ARGS="$cmake_args" "$PY" -m pip install -q -r requirements-llamacpp.txt
  # The GGUF converter ships in the release's source archive, not in the wheel.
  converter="$VENV/share/llama-cpp-converter"
  if [ ! -f "$converter/convert_hf_to_gguf.py" ]; then
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: -r requirements-llamacpp.txt -d "$tmp"
    mkdir -p "$converter"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
    cp -r "$tmp"/llama_cpp_python-*/vendor/llama.cpp/{convert_hf_to_gguf.py,conversion,gguf-py} "$converter/"
    rm -rf "$tmp"
  fi
fi

if [ "$DEVICE" = cuda ] && [ "${SKIP_FLASH_ATTN:-0}" != 1 ]; then
  # Optional: every model path also runs with PyTorch SDPA or eager attention.
  "$PY" -m pip install -q flash-attn --no-build-isolation \
    || echo "[setup] flash-attn could not be installed; SDPA attention will be used (this is fine)"
fi

echo "$want" > "$stamp"
echo "[setup] done: activate with 'source $VENV/bin/activate' ($DEVICE, torch $("$PY" -c 'import torch; print(torch.__version__)'))"
