#!/usr/bin/env bash
# Sets up a fresh machine for seqlab: Debian packages for the built-in corpora, and a
# virtual environment (.venv) with the local CPU build of torch and the package itself.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Speech (flite_bible): flite, espeak-ng, and festival with ked (a speaker flite lacks) and an
# HTS voice of slt (seqlab/data/corpora/tts_voices.py).
# The serve tests drive the demo page in headless Chromium (Debian's browser and driver).
APT_PACKAGES=(sword-text-kjv sword-text-sparv sword-text-web flite espeak-ng
  festival festvox-kdlpc16k festvox-us-slt-hts chromium chromium-driver)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] not root, missing: ${missing[*]} (the corpora's packages are fetched with" \
      "'apt-get download' into the data cache; without the synthesizers or chromium their tests skip)"
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[setup] pip install torch==2.13.0 (CPU)"
  .venv/bin/pip install -q torch==2.13.0
fi
if ! .venv/bin/python -c "import seqlab, pytest, hypothesis" 2>/dev/null || [ pyproject.toml -nt .venv/.seqlab-installed ]; then
  echo "[setup] pip install -e .[dev]"
  .venv/bin/pip install -q -e ".[dev]"
  touch .venv/.seqlab-installed
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
