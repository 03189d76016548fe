/* WAL checkpoints in a thread of their own, so that their fsync() never stalls the event loop. */
#ifndef BG_CHECKPOINT_H
#define BG_CHECKPOINT_H

#include <sqlite3.h>

struct checkpointer;

/*
 * Takes over the checkpoints of db (in WAL mode, file path): db no longer
 * checkpoints on commit; a thread with its own connection does, once
 * frames new frames are in the WAL or a second after the last commit.
 * Once the WAL holds restart_frames frames, the thread also makes it
 * start over (see checkpoint.c), holding db's writes back meanwhile: db
 * needs a busy handler. NULL and *cause if the thread or its connection
 * cannot be had.
 */
struct checkpointer *checkpointer_start(sqlite3 *db, const char *path,
    int frames, int restart_frames, char **cause);
/*
 * A busy handler (sqlite3_busy_handler) for db and the thread alike:
 * naps of 0.1 ms for up to a second. SQLite's own handler sleeps 25 to
 * 100 ms at a time once a wait goes on, oversleeping a lock held for
 * milliseconds.
 */
int checkpoint_busy_nap(void *arg, int tries);
/* Stops the thread (after a last checkpoint) and gives db back its own. */
void checkpointer_stop(struct checkpointer *c);

#endif
