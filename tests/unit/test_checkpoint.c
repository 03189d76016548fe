/* The checkpoint thread: the WAL stays bounded under commits that never pause. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"

#define PAGE 4096
#define RESTART 64 /* frames */

static char dir[64], path[128], wal[160];

static int
setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test_checkpoint.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/t.db", dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	return 0;
}

static int
teardown(void **state)
{
	char shm[160];

	snprintf(shm, sizeof(shm), "%s-shm", path);
	unlink(wal);
	unlink(shm);
	unlink(path);
	rmdir(dir);
	return 0;
}

static void
exec_ok(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
}

static off_t
size_of(const char *p)
{
	struct stat sb;

	return stat(p, &sb) == 0 ? sb.st_size : 0;
}

/*
 * Commits back to back, as a busy event loop makes them: without the
 * RESTART past restart_frames the WAL never starts over and grows by
 * every commit (thousands of frames here).
 */
static void
test_wal_bounded(void **state)
{
	struct checkpointer *c;
	sqlite3 *db;
	char *cause = NULL;
	off_t biggest = 0;
	int i;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_handler(db, checkpoint_busy_nap, NULL);
	exec_ok(db, "PRAGMA journal_mode = WAL");
	exec_ok(db, "PRAGMA synchronous = NORMAL");
	exec_ok(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
	c = checkpointer_start(db, path, 8, RESTART, &cause);
	if (c == NULL)
		fail_msg("checkpointer_start: %s", cause);
	for (i = 0; i < 3000; i++) {
		exec_ok(db, "INSERT INTO t (v) VALUES (zeroblob(3000))");
		if (i % 2 == 1)
			exec_ok(db,
			    "DELETE FROM t WHERE id = (SELECT min(id) "
			    "FROM t)");
		if (size_of(wal) > biggest)
			biggest = size_of(wal);
		usleep(200); /* the event loop's other work */
	}
	checkpointer_stop(c);
	/*
	 * The restart waits for the writer, which a loaded machine may
	 * delay: about 80 frames here idle, over 1,024 once with both cores
	 * busy; without the restart the WAL reached 4,074 to 7,229 frames in
	 * four runs, so half of the least of those still tells them apart.
	 */
	assert_true(biggest < (off_t)(32 * RESTART) * (PAGE + 24));
	assert_true(biggest > 0);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Stopped at once after starting: the thread joins, nothing is left. */
static void
test_start_stop(void **state)
{
	struct checkpointer *c;
	sqlite3 *db;
	char *cause = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	exec_ok(db, "PRAGMA journal_mode = WAL");
	c = checkpointer_start(db, path, 1000, 8192, &cause);
	assert_non_null(c);
	checkpointer_stop(c);
	checkpointer_stop(NULL);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_wal_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_start_stop, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
