#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "log.h"
#include "xmalloc.h"

/*
 * A PASSIVE checkpoint copies what no reader still needs and never waits,
 * so the writer in the event loop carries on meanwhile. But the WAL only
 * starts over when a write begins with every frame copied, and under a
 * steady stream of commits some are always newer than the last copy: the
 * WAL would grow without end. Past restart_frames a RESTART checkpoint
 * holds the writer back for the few frames the PASSIVE one left and a
 * sync, a few milliseconds, and the WAL starts over.
 */
/*
 * How long a connection waits for a lock another holds: an admin's
 * sqlite3, a backup, or this thread restarting the WAL.
 */
#define BUSY_MS 1000

struct checkpointer {
	sqlite3 *main; /* the event loop's connection */
	sqlite3 *db; /* the thread's own */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int frames; /* wake the thread once this many frames are new */
	int restart_frames;
	int copied; /* frames the last checkpoint copied */
	int due; /* a checkpoint is wanted now */
	int dirty; /* commits since the last checkpoint */
	int stop;
};

int
checkpoint_busy_nap(void *arg, int tries)
{
	if (tries >= BUSY_MS * 10)
		return 0;
	usleep(100);
	return 1;
}

/* Runs in the event loop's thread after each commit: only a signal. */
static int
on_commit(void *arg, sqlite3 *db, const char *name, int nframes)
{
	struct checkpointer *c = arg;

	pthread_mutex_lock(&c->lock);
	c->dirty = 1;
	if (nframes < c->copied)
		c->copied = 0; /* the WAL started over */
	if (nframes - c->copied >= c->frames && !c->due) {
		c->due = 1;
		pthread_cond_signal(&c->wake);
	}
	pthread_mutex_unlock(&c->lock);
	return SQLITE_OK;
}

/* Runs in the thread, without the lock. */
static void
checkpoint(struct checkpointer *c)
{
	int nlog = 0, ncopied = 0, rc;

	rc = sqlite3_wal_checkpoint_v2(
	    c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &ncopied);
	if (rc == SQLITE_OK && nlog >= c->restart_frames) {
		log_debug("store: the WAL has %d frames; restarting it", nlog);
		rc = sqlite3_wal_checkpoint_v2(
		    c->db, NULL, SQLITE_CHECKPOINT_RESTART, &nlog, &ncopied);
	}
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		log_warn("store: checkpoint: %s", sqlite3_errmsg(c->db));
	pthread_mutex_lock(&c->lock);
	c->copied = ncopied > 0 ? ncopied : 0;
	pthread_mutex_unlock(&c->lock);
}

static void *
run(void *arg)
{
	struct checkpointer *c = arg;
	struct timespec until;
	int stop, go;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		while (!c->due && !c->stop &&
		    pthread_cond_timedwait(&c->wake, &c->lock, &until) == 0)
			continue;
		/* Due by size, or a quiet second after some commits. */
		go = c->due || c->dirty;
		stop = c->stop;
		c->due = c->dirty = 0;
		pthread_mutex_unlock(&c->lock);
		if (go)
			checkpoint(c);
		pthread_mutex_lock(&c->lock);
		if (stop)
			break;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

struct checkpointer *
checkpointer_start(
    sqlite3 *db, const char *path, int frames, int restart_frames, char **cause)
{
	struct checkpointer *c = xcalloc(1, sizeof(*c));
	sigset_t all, old;
	int rc;

	c->main = db;
	c->frames = frames;
	c->restart_frames = restart_frames;
	if (sqlite3_open_v2(path, &c->db,
		SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
		NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: checkpoint connection: %s", path,
		    c->db != NULL ? sqlite3_errmsg(c->db) : "out of memory");
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	/* Short naps: the writer's lock is free only between its commits. */
	sqlite3_busy_handler(c->db, checkpoint_busy_nap, NULL);
	/* Reading the header tells this connection the file is in WAL mode. */
	if (sqlite3_exec(c->db, "PRAGMA schema_version", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		xasprintf(cause, "%s: checkpoint connection: %s", path,
		    sqlite3_errmsg(c->db));
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->wake, NULL);
	/* Signals are the event loop's: the thread starts with all blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, NULL, run, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		xasprintf(
		    cause, "%s: checkpoint thread: %s", path, strerror(rc));
		pthread_cond_destroy(&c->wake);
		pthread_mutex_destroy(&c->lock);
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	/* Replaces the automatic checkpoint, which runs in the committer. */
	sqlite3_wal_hook(db, on_commit, c);
	return c;
}

void
checkpointer_stop(struct checkpointer *c)
{
	if (c == NULL)
		return;
	sqlite3_wal_autocheckpoint(c->main, 1000);
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_signal(&c->wake);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	if (sqlite3_close(c->db) != SQLITE_OK)
		log_err("store: checkpoint connection: close: %s",
		    sqlite3_errmsg(c->db));
	free(c);
}
