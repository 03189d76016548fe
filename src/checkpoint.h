/* WAL checkpoints in a thread of their own, so that their fsync() never stalls the event loop. */
#ifndef BG_CHECKPOINT_H
#define BG_CHECKPOINT_H

#include <sqlite3.h>

struct checkpointer;

/*
 * Takes over the checkpoints of db (in WAL mode, file path): db no longer
 * checkpoints on commit; a thread with its own connection does, once the
 * WAL holds frames frames or a second after the last commit. NULL and
 * *cause if the thread or its connection cannot be had.
 */
struct checkpointer *
checkpointer_start(sqlite3 *db, const char *path, int frames, char **cause);
/* Stops the thread (after a last checkpoint) and gives db back its own. */
void checkpointer_stop(struct checkpointer *c);

#endif
