#!/bin/sh
# Sets up and runs every test (README command two; .ci/run calls it):
#  1. installs the Debian packages it needs;
#  2. builds with -Werror, ASan and UBSan in build/check and runs make check
#     (unit tests, fuzz corpus replay, integration tests against a private
#     Prosody and ejabberd and Barev peers in a network namespace);
#  3. builds without sanitizers in build/valgrind and runs the unit tests,
#     the corpus replays and the XMPP integration tests under valgrind;
#  4. runs make distcheck.
# The last line is "N passed, M failed"; the exit status is 0 only if M is 0.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

pass=0
failed=0
note() { echo "run-all: $*"; }
finish() {
	echo "$pass passed, $failed failed"
	[ "$failed" = 0 ]
	exit $?
}
# Adds a build directory's automake summary; ERROR (a crashed or
# unparsable test script) counts as a failure.
count() {
	log=$1/test-suite.log
	get() { sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" "$log" 2>/dev/null | head -n 1; }
	p=$(get PASS); f=$(get FAIL); e=$(get ERROR); x=$(get XPASS)
	p=${p:-0}; f=$(( ${f:-0} + ${e:-0} + ${x:-0} ))
	if [ "$2" != 0 ] && [ "$f" = 0 ]; then f=1; fi
	[ "$f" != 0 ] && tail -n 150 "$log"
	pass=$((pass + p)); failed=$((failed + f))
	note "$1: $p passed, $f failed"
}
configure_in() {
	mkdir -p "$1" && cd "$1" || return 1
	shift
	"$top/configure" "$@" >configure.out 2>&1 || { tail -20 configure.out; return 1; }
	make -j2 >make.out 2>&1 || { tail -40 make.out; return 1; }
}

sh contrib/install-deps.sh || { failed=1; finish; }
autoreconf -fi >/dev/null 2>&1 || { note "autoreconf failed"; failed=1; finish; }

if (configure_in build/check --enable-werror --enable-sanitizers); then
	(cd build/check && make -j2 check >check.out 2>&1)
	count build/check $?
else
	note "sanitizer build failed"; failed=$((failed + 1))
fi

if (configure_in build/valgrind --enable-werror); then
	(cd build/valgrind && make check-valgrind >check.out 2>&1)
	count build/valgrind $?
else
	note "plain build failed"; failed=$((failed + 1))
fi

mkdir -p build/dist
if (cd build/dist && "$top/configure" >configure.out 2>&1 &&
	make distcheck >distcheck.out 2>&1); then
	pass=$((pass + 1)); note "make distcheck: passed"
else
	tail -n 60 build/dist/distcheck.out; failed=$((failed + 1))
	note "make distcheck: FAILED"
fi
finish
