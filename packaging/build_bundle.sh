#!/usr/bin/env bash
# Build the one-folder desktop bundle with PyInstaller: dist/simclr-studio/simclr-studio
#   bash packaging/build_bundle.sh
# Needs the app installed in this Python (pip install -e .) and PyInstaller (installed if missing).
# The bundle holds PyTorch as installed here: a CUDA build brings its NVIDIA libraries (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m PyInstaller --version >/dev/null 2>&1 || python -m pip install "pyinstaller>=6.5"
[ -f resources/icons/simclr-studio-256.png ] || python packaging/make_icons.py
python -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/simclr-studio.spec
cp packaging/simclr-studio.desktop packaging/install_desktop_entry.sh dist/simclr-studio/
echo
echo "built: dist/simclr-studio/simclr-studio ($(du -sh dist/simclr-studio | cut -f1))"
echo "add it to your menu: bash dist/simclr-studio/install_desktop_entry.sh dist/simclr-studio/simclr-studio"
