#!/bin/sh
# Sets up and runs every test: installs packages, builds with -Werror and
# the sanitizers in build/check, runs make check (unit tests, fuzz corpus
# replay, integration tests against a private Prosody and ejabberd), then
# make distcheck, and prints "N passed, M failed" as its last line.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
sh contrib/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

fail() {
	echo "run-all: $1" >&2
	echo "0 passed, 1 failed"
	exit 1
}

autoreconf -fi >/dev/null || fail "autoreconf failed"
mkdir -p build/check
cd build/check || exit 1
"$top/configure" --enable-werror --enable-sanitizers >configure.out 2>&1 ||
	{ tail -20 configure.out; fail "configure failed"; }
make -j2 >make.out 2>&1 || { tail -40 make.out; fail "build failed"; }

make -j2 check
check_rc=$?
# automake counts each TAP line; ERROR (a crashed or unparsable test) is a failure.
count() {
	sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" test-suite.log 2>/dev/null | head -n 1
}
pass=$(count PASS); fail_n=$(count FAIL); err=$(count ERROR); xpass=$(count XPASS)
pass=${pass:-0}; fail_n=$(( ${fail_n:-0} + ${err:-0} + ${xpass:-0} ))
if [ "$check_rc" != 0 ] && [ "$fail_n" = 0 ]; then
	fail_n=1
fi
[ "$fail_n" != 0 ] && cat test-suite.log | tail -n 200

# The tarball must build and pass its own tests the same way.
cd "$top" || exit 1
mkdir -p build/dist
cd build/dist || exit 1
if [ ! -f Makefile ]; then
	"$top/configure" >configure.out 2>&1 || fail "configure (dist) failed"
fi
if make distcheck >distcheck.out 2>&1; then
	pass=$((pass + 1))
	echo "PASS: make distcheck"
else
	fail_n=$((fail_n + 1))
	tail -60 distcheck.out
	echo "FAIL: make distcheck"
fi

echo "$pass passed, $fail_n failed"
[ "$fail_n" = 0 ]
