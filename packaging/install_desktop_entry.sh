#!/usr/bin/env bash
# Add SIMCLR Studio to the current user's application menu (freedesktop: GNOME, KDE, Xfce...).
#   bash packaging/install_desktop_entry.sh                 # the `simclr-studio` on PATH (pip install)
#   bash packaging/install_desktop_entry.sh /opt/simclr-studio/simclr-studio   # a bundle's executable
#   bash packaging/install_desktop_entry.sh --uninstall
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
icons="$here/../resources/icons"
[ -d "$icons" ] || icons="$here/_internal/simclr_studio/resources/icons"  # inside a bundle folder
data="${XDG_DATA_HOME:-$HOME/.local/share}"
sizes="16 24 32 48 64 128 256 512"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$data/applications/simclr-studio.desktop" "$data/icons/hicolor/scalable/apps/simclr-studio.svg"
    for s in $sizes; do rm -f "$data/icons/hicolor/${s}x${s}/apps/simclr-studio.png"; done
    echo "removed SIMCLR Studio from the menu"
    exit 0
fi

exe="${1:-$(command -v simclr-studio || true)}"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "error: simclr-studio not found; pass the path of the executable (a bundle's simclr-studio)" >&2
    exit 2
fi
exe="$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")"

mkdir -p "$data/applications" "$data/icons/hicolor/scalable/apps"
install -m 644 "$icons/simclr-studio.svg" "$data/icons/hicolor/scalable/apps/simclr-studio.svg"
for s in $sizes; do
    mkdir -p "$data/icons/hicolor/${s}x${s}/apps"
    install -m 644 "$icons/simclr-studio-$s.png" "$data/icons/hicolor/${s}x${s}/apps/simclr-studio.png"
done
sed "s|^Exec=.*|Exec=\"$exe\" %f|" "$here/simclr-studio.desktop" > "$data/applications/simclr-studio.desktop"
chmod 644 "$data/applications/simclr-studio.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "installed: $data/applications/simclr-studio.desktop (runs $exe)"
