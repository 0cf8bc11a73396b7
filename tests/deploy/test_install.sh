#!/usr/bin/env bash
# test_install.sh BUILD_DIR SOURCE_DIR VERSION — installs the build into a
# temporary prefix, moves the prefix elsewhere (fedkd.pc is relocatable),
# and checks what a user of the install gets: every file in place, each
# public header compiling on its own, `pkg-config fedkd` valid, a program
# outside the tree (install_app.c) built and linked with only its flags and
# giving the expected answers, and the installed executables running.
set -euo pipefail
build=$1 src=$2 version=$3
work=$(mktemp -d "${FKD_TEST_TMP:-/tmp}/install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/prefix" > "$work/install.log" ||
  fail "cmake --install: $(tail -5 "$work/install.log")"
mv "$work/prefix" "$work/moved"
p=$work/moved

libdir=
for d in "$p"/lib/pkgconfig "$p"/lib/*/pkgconfig; do [ -d "$d" ] && libdir=$(dirname "$d") && break; done
[ -n "$libdir" ] || fail "no pkgconfig folder under $p/lib"
expect=(bin/fedkd include/fedkd/fkd_common.h include/fedkd/fkd_train.h
        include/fedkd/fkd_compress.h include/fedkd/fkd_wire.h
        share/man/man1/fedkd.1 share/man/man1/fedkd-client.1
        lib/systemd/system/fedkd-coordinator.service lib/systemd/system/fedkd-client@.service
        share/fedkd/examples/coordinator.conf share/fedkd/examples/client.conf)
for f in "${expect[@]}"; do [ -f "$p/$f" ] || fail "$f not installed"; done
for l in fkd_common fkd_train fkd_compress fkd_wire; do
  [ -f "$libdir/lib$l.a" ] || fail "lib$l.a not installed in $libdir"
done
[ -f "$libdir/pkgconfig/fedkd.pc" ] || fail "fedkd.pc not installed"
have_client=0
if [ -f "$src/client/fkd_client.h" ] && ls "$src"/client/*.c >/dev/null 2>&1; then
  have_client=1
  for f in include/fedkd/fkd_client.h bin/fedkd-client; do
    [ -f "$p/$f" ] || fail "$f not installed (client/ has sources)"
  done
  [ -f "$libdir/libfkd_client.a" ] || fail "libfkd_client.a not installed"
fi
# The units must name the executables of this install, not a build folder.
grep -q "^ExecStart=$work/prefix/bin/fedkd serve" "$p/lib/systemd/system/fedkd-coordinator.service" ||
  fail "fedkd-coordinator.service does not run $work/prefix/bin/fedkd"

export PKG_CONFIG_PATH=$libdir/pkgconfig
pkg-config --validate fedkd || fail "pkg-config --validate fedkd"
[ "$(pkg-config --modversion fedkd)" = "$version" ] || fail "fedkd.pc version is not $version"
cflags=$(pkg-config --cflags fedkd)
libs=$(pkg-config --libs fedkd)
case "$cflags" in *"$p"*) ;; *) fail "cflags '$cflags' do not point into the moved prefix" ;; esac

cc=${CC:-cc}
for h in "$p"/include/fedkd/*.h; do
  echo "#include \"$(basename "$h")\"" | $cc -std=c11 -Wall -Werror -fsyntax-only -x c - $cflags ||
    fail "$(basename "$h") does not compile on its own"
done

defs=()
[ $have_client = 1 ] && defs=(-DFKD_INSTALL_HAVE_CLIENT)
# shellcheck disable=SC2086
$cc -std=c11 -Wall -Werror ${FKD_APP_CFLAGS:-} "${defs[@]}" "$src/tests/deploy/install_app.c" -o "$work/app" $cflags $libs ||
  fail "install_app.c does not build against fedkd.pc"
out=$(OMP_NUM_THREADS=1 "$work/app") || fail "install_app exited non-zero"
echo "$out"
grep -Eq '^strerror=[A-Za-z].{10,}' <<<"$out" || fail "fkd_strerror gave no sentence"
want=("tokens=4 text=edge" "matmul=1,2,3,4" "q8_0=q8_0 last=0.94" "pubkey_prefix=fedkd-pub-v1")
for w in "${want[@]}"; do grep -qxF "$w" <<<"$out" || fail "install_app: expected '$w'"; done
if [ $have_client = 1 ]; then grep -q "^client_state=idle" <<<"$out" || fail "client library"; fi

"$p/bin/fedkd" --version | grep -qx "fedkd $version" || fail "installed fedkd --version"
if [ $have_client = 1 ]; then "$p/bin/fedkd-client" --help >/dev/null || fail "fedkd-client --help"; fi
echo "install test: ok ($(wc -l < "$work/install.log") files installed, client library: $have_client)"
