#!/bin/sh
# meson install script: install_if_absent.sh SOURCE DIR MODE copies SOURCE into
# $DESTDIR/DIR with MODE, unless a file of that name is there already (an operator's
# configuration and passwords survive a reinstall). Installed as root into the real
# system (no DESTDIR), the file's group becomes mqgate when that group exists: the
# broker runs as mqgate and re-reads its files on SIGHUP.
set -eu
src=$1
dir=${DESTDIR:-}$2
mode=$3
dest=$dir/$(basename "$src")
mkdir -p "$dir"
if [ -e "$dest" ]; then
  echo "Keeping $dest (already there)"
  exit 0
fi
install -m "$mode" "$src" "$dest"
echo "Installing $src to $dest"
if [ -z "${DESTDIR:-}" ] && [ "$(id -u)" -eq 0 ] && getent group mqgate >/dev/null 2>&1; then
  chgrp mqgate "$dest"
fi
