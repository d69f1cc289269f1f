#!/usr/bin/env bash
# Builds the Debian packages mqgate and mqgate-dev from this tree with Debian's own tools
# (debian/: debhelper with meson), checks them with lintian, and prints where they are:
#   scripts/package.sh        -> build-package/mqgate_<version>_<arch>.deb, mqgate-dev_...
# The tree (committed and uncommitted files, not the ignored ones) is copied to
# build-package/src first: the repository gets no build outputs. Installs the missing
# build tools itself (scripts/deps.sh package). MQGATE_PACKAGE_JOBS: parallel jobs (2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh package

version=$(sed -n "s/^  version: '\([^']*\)',$/\1/p" meson.build)
deb_version=$(dpkg-parsechangelog -S Version)
if [ "$version" != "$deb_version" ]; then
  echo "package.sh: meson.build says version $version, debian/changelog $deb_version:" \
    "add a changelog entry for $version" >&2
  exit 1
fi

out=build-package
src=$out/src/mqgate-$version
rm -rf "$out"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$src"
else  # an unpacked source tree: everything but the build directories
  tar --exclude='./build*' --exclude='./test/js/node_modules' -cf - . | tar -xf - -C "$src"
fi

# The release build compiles the same files each time: let meson's ccache find its cache
# (debhelper gives the build a HOME of its own) and the paths relative to the worktrees.
if command -v ccache >/dev/null; then
  CCACHE_DIR=${CCACHE_DIR:-$(ccache -k cache_dir)}
  export CCACHE_DIR CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD/$out/src} CCACHE_NOHASHDIR=1
fi
# noautodbgsym: no -dbgsym package (17 MB, and a minute of compression on two cores).
export DEB_BUILD_OPTIONS="parallel=${MQGATE_PACKAGE_JOBS:-2} noautodbgsym ${DEB_BUILD_OPTIONS:-}"
log=$out/build.log
echo "package.sh: building mqgate $version in $src (log: $log)" >&2
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "package.sh: dpkg-buildpackage failed (log: $log)" >&2
  exit 1
fi
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out"/
rm -rf "$out/src"

changes=$(ls "$out"/mqgate_"$version"_*.changes)
# Remaining tags are explained in debian/*.lintian-overrides; a new one fails the build.
if ! lintian --fail-on error,warning --info "$changes" >"$out/lintian.log" 2>&1; then
  cat "$out/lintian.log" >&2
  echo "package.sh: lintian found problems ($out/lintian.log)" >&2
  exit 1
fi
grep -v '^N:' "$out/lintian.log" >&2 || true
echo "package.sh: lintian: no errors or warnings" >&2
for deb in "$out"/*.deb; do echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"; done
