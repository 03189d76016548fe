#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "jid.h"
#include "log.h"
#include "store.h"
#include "xmalloc.h"

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Durability. WAL with synchronous=NORMAL: COMMIT write()s the transaction
 * to the WAL before it returns and fsync()s only at checkpoints. A
 * committed row therefore survives kill -9 or any crash of this process
 * (the kernel holds the data); an OS crash or power loss may lose the last
 * commits but never corrupts the file. FULL would add an fsync() to every
 * queued message and contact change, and that stalls the whole
 * single-threaded event loop (every pipe and the component link) for
 * milliseconds to far more on a loaded disk, to guard against a power loss
 * that takes the XMPP server's state and the undelivered stanzas in flight
 * with it anyway.
 */
#define STORE_SYNCHRONOUS "NORMAL"
/*
 * Those fsync()s happen in a thread of their own (checkpoint.c), started
 * at this WAL size (SQLite's own default) or after a quiet second; past
 * the second size (32 MiB at 4 KiB pages) the WAL is made to start over.
 */
#define STORE_CHECKPOINT_FRAMES 1000
#define STORE_RESTART_FRAMES 8192
/* PRAGMA application_id: 0x42617276, "Barv", so a foreign database is not taken over. */
#define STORE_APP_ID 1113682550
#define STR(x) #x
#define XSTR(x) STR(x)

/*
 * The migrations, in order: entry i takes user_version i to i + 1, inside
 * one transaction with foreign keys off (so a later entry can rebuild a
 * table the way SQLite documents), checked with foreign_key_check before
 * commit. Add a version by appending an entry; never edit a released one.
 *
 * Nicks are COLLATE NOCASE on the column, so every comparison and the
 * unique and primary keys ignore ASCII case while the stored text keeps it.
 * Lengths are in bytes (CAST AS BLOB), as BAREV_NICK_MAX is.
 */
#define NICK_COL                                                               \
	"nick TEXT NOT NULL COLLATE NOCASE "                                   \
	"CHECK (length(CAST(nick AS BLOB)) BETWEEN 1 AND 64)"
#define ADDR_COL                                                               \
	"addr BLOB NOT NULL "                                                  \
	"CHECK (typeof(addr) = 'blob' AND length(addr) = 16)"
#define USER_REF                                                               \
	"user_jid TEXT NOT NULL "                                              \
	"REFERENCES users (jid) ON DELETE CASCADE"
#define NOW "(CAST(strftime('%s', 'now') AS INTEGER))"

static const char *const migrations[] = {
	/* 1: the initial schema. */
	"PRAGMA application_id = " XSTR(
	    STORE_APP_ID) ";"
			  "CREATE TABLE users ("
			  "  jid TEXT NOT NULL PRIMARY KEY,"
			  "  " NICK_COL ","
			  "  " ADDR_COL ","
			  "  created INTEGER NOT NULL DEFAULT " NOW ","
			  "  UNIQUE (addr, nick)"
			  ") WITHOUT ROWID;"
			  "CREATE TABLE contacts ("
			  "  " USER_REF ","
			  "  " NICK_COL ","
			  "  " ADDR_COL ","
			  "  port INTEGER NOT NULL DEFAULT 0 CHECK (port "
			  "BETWEEN 0 AND 65535),"
			  "  sub_to INTEGER NOT NULL DEFAULT 0 CHECK (sub_to "
			  "IN (0, 1)),"
			  "  sub_from INTEGER NOT NULL DEFAULT 0 CHECK "
			  "(sub_from IN (0, 1)),"
			  "  created INTEGER NOT NULL DEFAULT " NOW ","
			  "  PRIMARY KEY (user_jid, nick, addr)"
			  ") WITHOUT ROWID;"
			  "CREATE INDEX contacts_addr ON contacts (addr);"
			  "CREATE TABLE pending ("
			  "  " USER_REF ","
			  "  " NICK_COL ","
			  "  " ADDR_COL ","
			  "  created INTEGER NOT NULL,"
			  "  last_asked INTEGER NOT NULL,"
			  "  PRIMARY KEY (user_jid, nick, addr)"
			  ") WITHOUT ROWID;"
			  /* AUTOINCREMENT: an id held by a timer never names a newer message. */
			  "CREATE TABLE queue ("
			  "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
			  "  direction INTEGER NOT NULL DEFAULT 0 CHECK "
			  "(direction IN (0, 1)),"
			  "  " USER_REF ","
			  "  " NICK_COL ","
			  "  " ADDR_COL ","
			  "  sender TEXT NOT NULL,"
			  "  stanza_id TEXT,"
			  "  body TEXT NOT NULL,"
			  "  xhtml TEXT,"
			  "  receipt INTEGER NOT NULL DEFAULT 0 CHECK (receipt "
			  "IN (0, 1)),"
			  "  created INTEGER NOT NULL,"
			  "  expires INTEGER NOT NULL DEFAULT 0,"
			  "  state INTEGER NOT NULL DEFAULT 0 CHECK (state IN "
			  "(0, 1))"
			  ");"
			  "CREATE INDEX queue_contact ON queue (user_jid, "
			  "nick, addr, id);"
			  "CREATE INDEX queue_expires ON queue (expires) WHERE "
			  "expires > 0;",
	/*
	 * 2: that index cost every message's insert and delete a page write
	 * (a sixth of their work) to serve a scan done once a minute.
	 */
	"DROP INDEX queue_expires;",
	/*
	 * 3: the JID the user knows a contact by, when it is not the canonical
	 * one (the typeable form): the gateway speaks from it, so that the
	 * user's roster holds one entry that leaves "subscription requested".
	 */
	"ALTER TABLE contacts ADD COLUMN jid TEXT;",
};
#define SCHEMA_VERSION ((int)nitems(migrations))

enum stmt {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_USER_ADD,
	S_USER_GET,
	S_USER_BY_NICK,
	S_USER_COUNT_AT,
	S_USER_DEL,
	S_USER_SET_ADDR,
	S_USERS_EACH,
	S_CONTACT_PUT,
	S_CONTACT_GET,
	S_CONTACT_DEL,
	S_CONTACTS_EACH,
	S_CONTACTS_AT,
	S_PENDING_PUT,
	S_PENDING_DEL,
	S_PENDING_EACH,
	S_PENDING_EXPIRE,
	S_MSG_ADD,
	S_MSG_EACH_FOR,
	S_MSG_TO_XMPP,
	S_MSG_DEL,
	S_MSG_EXPIRED,
	S_MSG_DEL_EXPIRED,
	S_MSG_LIFETIME,
	S_MSG_COUNT,
	S_COUNT
};

#define USER_COLS "jid, nick, addr, created"
#define CONTACT_COLS "nick, addr, port, sub_to, sub_from, jid"
/*
 * The queue's state column (schema 1) is no longer read or written: what
 * a pipe has had is known in memory, and after a restart all is sent.
 */
#define MSG_COLS                                                               \
	"id, direction, user_jid, nick, addr, sender, stanza_id, "             \
	"body, xhtml, receipt, created, expires"

/* Every statement, prepared once at open; "what" names it in log lines. */
static const struct {
	const char *what;
	const char *sql;
} stmts[S_COUNT] = {
	/* IMMEDIATE: take the write lock now, not halfway through. */
	[S_BEGIN] = { "begin", "BEGIN IMMEDIATE" },
	[S_COMMIT] = { "commit", "COMMIT" },
	[S_ROLLBACK] = { "rollback", "ROLLBACK" },

	[S_USER_ADD] = { "user add",
	    "INSERT INTO users (jid, nick, addr) VALUES (?1, ?2, ?3)" },
	[S_USER_GET] = { "user get",
	    "SELECT " USER_COLS " FROM users WHERE jid = ?1" },
	[S_USER_BY_NICK] = { "user by nick",
	    "SELECT " USER_COLS " FROM users WHERE addr = ?1 AND nick = ?2" },
	[S_USER_COUNT_AT] = { "user count",
	    "SELECT count(*) FROM users WHERE addr = ?1" },
	[S_USER_DEL] = { "user del", "DELETE FROM users WHERE jid = ?1" },
	[S_USER_SET_ADDR] = { "user set addr",
	    "UPDATE users SET addr = ?2 WHERE jid = ?1" },
	[S_USERS_EACH] = { "users each",
	    "SELECT " USER_COLS " FROM users ORDER BY jid" },

	[S_CONTACT_PUT] = { "contact put",
	    "INSERT INTO contacts (user_jid, nick, addr, port, sub_to, "
	    "sub_from, jid)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
	    " ON CONFLICT (user_jid, nick, addr) DO UPDATE SET"
	    " nick = excluded.nick, port = excluded.port,"
	    " sub_to = excluded.sub_to, sub_from = excluded.sub_from,"
	    " jid = excluded.jid" },
	[S_CONTACT_GET] = { "contact get",
	    "SELECT " CONTACT_COLS " FROM contacts"
	    " WHERE user_jid = ?1 AND nick = ?2 AND addr = ?3" },
	[S_CONTACT_DEL] = { "contact del",
	    "DELETE FROM contacts"
	    " WHERE user_jid = ?1 AND nick = ?2 AND addr = ?3" },
	[S_CONTACTS_EACH] = { "contacts each",
	    "SELECT " CONTACT_COLS " FROM contacts WHERE user_jid = ?1"
	    " ORDER BY nick, addr" },
	[S_CONTACTS_AT] = { "contacts at",
	    "SELECT user_jid, " CONTACT_COLS " FROM contacts WHERE addr = ?1"
	    " ORDER BY user_jid, nick" },

	[S_PENDING_PUT] = { "pending put",
	    "INSERT INTO pending (user_jid, nick, addr, created, last_asked)"
	    " VALUES (?1, ?2, ?3, ?4, ?4)"
	    " ON CONFLICT (user_jid, nick, addr) DO UPDATE SET"
	    " nick = excluded.nick, last_asked = excluded.last_asked" },
	[S_PENDING_DEL] = { "pending del",
	    "DELETE FROM pending"
	    " WHERE user_jid = ?1 AND nick = ?2 AND addr = ?3" },
	[S_PENDING_EACH] = { "pending each",
	    "SELECT user_jid, nick, addr, created, last_asked FROM pending"
	    " WHERE last_asked > ?1"
	    " ORDER BY last_asked, created, user_jid, nick, addr" },
	[S_PENDING_EXPIRE] = { "pending expire",
	    "DELETE FROM pending WHERE last_asked <= ?1" },

	[S_MSG_ADD] = { "msg add",
	    "INSERT INTO queue (direction, user_jid, nick, addr, sender,"
	    " stanza_id, body, xhtml, receipt, created, expires)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)" },
	[S_MSG_EACH_FOR] = { "msg each",
	    "SELECT " MSG_COLS " FROM queue WHERE user_jid = ?1 AND nick = ?2"
	    " AND addr = ?3 AND direction = 0 AND id > ?4 ORDER BY id" },
	/* Only at link-up, and rare: a scan beats an index every insert pays. */
	[S_MSG_TO_XMPP] = { "msg to xmpp",
	    "SELECT " MSG_COLS " FROM queue WHERE direction = 1 ORDER BY id" },
	[S_MSG_DEL] = { "msg del", "DELETE FROM queue WHERE id = ?1" },
	[S_MSG_EXPIRED] = { "msg expired",
	    "SELECT " MSG_COLS " FROM queue"
	    " WHERE expires > 0 AND expires <= ?1 ORDER BY id" },
	[S_MSG_DEL_EXPIRED] = { "msg del expired",
	    "DELETE FROM queue WHERE expires > 0 AND expires <= ?1"
	    " AND id <= ?2" },
	[S_MSG_LIFETIME] = { "msg lifetime",
	    "UPDATE queue SET expires = created + ?1 WHERE expires > 0" },
	[S_MSG_COUNT] = { "msg count", "SELECT count(*) FROM queue" },
};

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmt[S_COUNT];
	struct checkpointer *ckpt;
};

/* Turns one result row into what a walk's caller is given. */
typedef int (*row_fn)(sqlite3_stmt *s, void *ctx);

int
store_schema_version(void)
{
	return SCHEMA_VERSION;
}

/* --- opening ------------------------------------------------------------ */

/* Run one statement of sql and give its first column as an integer. */
static int
query_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Run one statement of sql and copy its first column as text into buf. */
static int
query_text(sqlite3 *db, const char *sql, char *buf, size_t size)
{
	sqlite3_stmt *s;
	const unsigned char *t;
	int rc;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		t = sqlite3_column_text(s, 0);
		snprintf(buf, size, "%s", t != NULL ? (const char *)t : "");
	}
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

/*
 * Whether the file is ours and not from the future, before anything is
 * written to it: a fresh file has neither application_id nor version nor
 * tables. Leaves the version in *version. 0 or -1 + cause.
 */
static int
check_identity(sqlite3 *db, const char *path, int *version, char **cause)
{
	int app_id, ntables;

	/* The first read of the file: garbage fails here, "not a database". */
	if (query_int(db, "PRAGMA application_id", &app_id) == -1 ||
	    query_int(db, "PRAGMA user_version", version) == -1 ||
	    query_int(db, "SELECT count(*) FROM sqlite_master", &ntables) ==
		-1) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		return -1;
	}
	if (app_id == STORE_APP_ID && *version > SCHEMA_VERSION) {
		xasprintf(cause,
		    "%s: schema version %d is newer than the %d "
		    "this barev-gateway knows; run a newer barev-gateway",
		    path, *version, SCHEMA_VERSION);
		return -1;
	}
	if (app_id != STORE_APP_ID &&
	    (app_id != 0 || *version != 0 || ntables != 0)) {
		xasprintf(cause,
		    "%s: an SQLite database of another program "
		    "(application_id %#x, user_version %d), not "
		    "barev-gateway's",
		    path, (unsigned)app_id, *version);
		return -1;
	}
	return 0;
}

/* Bring the schema from version to SCHEMA_VERSION. 0 or -1 + cause. */
static int
migrate(sqlite3 *db, const char *path, int version, char **cause)
{
	char *sql = NULL;
	int v, bad, rv = -1;

	if (version == SCHEMA_VERSION)
		return 0;
	/* foreign_keys cannot change inside a transaction. */
	if (sqlite3_exec(db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL) !=
		SQLITE_OK ||
	    sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
		SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	/* Another process may have migrated between the check and the lock. */
	if (query_int(db, "PRAGMA user_version", &v) == -1) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	if (v > SCHEMA_VERSION) {
		xasprintf(cause,
		    "%s: schema version %d is newer than the %d "
		    "this barev-gateway knows; run a newer barev-gateway",
		    path, v, SCHEMA_VERSION);
		goto fail;
	}
	for (; v < SCHEMA_VERSION; v++) {
		if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) !=
		    SQLITE_OK) {
			xasprintf(cause,
			    "%s: migration to schema version %d: "
			    "%s",
			    path, v + 1, sqlite3_errmsg(db));
			goto fail;
		}
	}
	if (query_int(db, "SELECT count(*) FROM pragma_foreign_key_check",
		&bad) == -1 ||
	    bad != 0) {
		xasprintf(cause, "%s: migration to schema version %d: %s", path,
		    SCHEMA_VERSION,
		    bad != 0 ? "broken foreign keys" : sqlite3_errmsg(db));
		goto fail;
	}
	xasprintf(&sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		goto fail;
	}
	log_info("store: %s: schema version %d -> %d", path, version,
	    SCHEMA_VERSION);
	rv = 0;
fail:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	free(sql);
	return rv;
}

/* Connection settings that do not persist in the file. 0 or -1 + cause; *wal if in WAL mode. */
static int
configure(sqlite3 *db, const char *path, int *wal, char **cause)
{
	char mode[32];

	if (query_text(db, "PRAGMA journal_mode = WAL", mode, sizeof(mode)) ==
		-1 ||
	    sqlite3_exec(db, "PRAGMA synchronous = " STORE_SYNCHRONOUS, NULL,
		NULL, NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path, sqlite3_errmsg(db));
		return -1;
	}
	/* Some file systems cannot share memory; a rollback journal still works. */
	*wal = strcmp(mode, "wal") == 0;
	if (!*wal)
		log_warn("store: %s: journal_mode=%s, not wal", path, mode);
	return 0;
}

/* Foreign keys on, and proven on: the cascades depend on them. */
static int
enable_foreign_keys(sqlite3 *db, const char *path, char **cause)
{
	int fk = 0;

	if (sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) !=
		SQLITE_OK ||
	    query_int(db, "PRAGMA foreign_keys", &fk) == -1 || fk != 1) {
		xasprintf(cause, "%s: cannot enable foreign keys: %s", path,
		    fk != 1 ? "not supported" : sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

/* Create path with mode 0600 if missing: messages are private, -wal and -shm inherit it. */
static int
create_private(const char *path, char **cause)
{
	int fd;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

struct store *
store_open(const char *path, char **cause)
{
	struct store *st = xcalloc(1, sizeof(*st));
	int i, version, wal = 0;

	*cause = NULL;
	if (create_private(path, cause) == -1)
		goto fail;
	if (sqlite3_open_v2(path, &st->db,
		SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
		NULL) != SQLITE_OK) {
		xasprintf(cause, "%s: %s", path,
		    st->db != NULL ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_handler(st->db, checkpoint_busy_nap, NULL);
	if (check_identity(st->db, path, &version, cause) == -1 ||
	    configure(st->db, path, &wal, cause) == -1 ||
	    migrate(st->db, path, version, cause) == -1 ||
	    enable_foreign_keys(st->db, path, cause) == -1)
		goto fail;
	if (wal &&
	    (st->ckpt = checkpointer_start(st->db, path,
		 STORE_CHECKPOINT_FRAMES, STORE_RESTART_FRAMES, cause)) == NULL)
		goto fail;
	for (i = 0; i < S_COUNT; i++) {
		if (sqlite3_prepare_v3(st->db, stmts[i].sql, -1,
			SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
			NULL) != SQLITE_OK) {
			xasprintf(cause, "%s: preparing %s: %s", path,
			    stmts[i].what, sqlite3_errmsg(st->db));
			goto fail;
		}
	}
	return st;
fail:
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	int i;

	if (st == NULL)
		return;
	checkpointer_stop(st->ckpt);
	if (st->db != NULL && !sqlite3_get_autocommit(st->db))
		log_warn("store: closed inside a transaction, rolled back");
	for (i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	if (st->db != NULL) {
		/* Cheap, and keeps the planner's statistics current. */
		sqlite3_exec(st->db, "PRAGMA optimize", NULL, NULL, NULL);
		if (sqlite3_close(st->db) != SQLITE_OK)
			log_err("store: close: %s", sqlite3_errmsg(st->db));
	}
	free(st);
}

/* --- statement helpers -------------------------------------------------- */

static void
db_err(struct store *st, enum stmt id)
{
	log_err("store: %s: %s", stmts[id].what, sqlite3_errmsg(st->db));
}

/*
 * The prepared statement id, or NULL if it is in the middle of a walk
 * (a callback calling its own walk): binding would break the walk.
 */
static sqlite3_stmt *
stmt_get(struct store *st, enum stmt id)
{
	sqlite3_stmt *s = st->stmt[id];

	if (sqlite3_stmt_busy(s)) {
		log_err("store: %s: called from its own walk", stmts[id].what);
		return NULL;
	}
	return s;
}

/* Ready s for its next use; bindings are dropped so no pointer outlives the call. */
static void
stmt_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Bindings point at the caller's memory: the statement is reset before we return. */
static int
bind_text(sqlite3_stmt *s, int i, const char *text)
{
	if (text == NULL)
		return sqlite3_bind_null(s, i) == SQLITE_OK ? 0 : -1;
	return sqlite3_bind_text(s, i, text, -1, SQLITE_STATIC) == SQLITE_OK
	    ? 0
	    : -1;
}

static int
bind_addr(sqlite3_stmt *s, int i, const struct in6_addr *a)
{
	return sqlite3_bind_blob(s, i, a, (int)sizeof(*a), SQLITE_STATIC) ==
		SQLITE_OK
	    ? 0
	    : -1;
}

/* A Barev JID as the nick at i and the address at i + 1. */
static int
bind_barev(sqlite3_stmt *s, int i, const struct barev_jid *j)
{
	if (sqlite3_bind_text(s, i, j->nick,
		(int)strnlen(j->nick, sizeof(j->nick)),
		SQLITE_STATIC) != SQLITE_OK)
		return -1;
	return bind_addr(s, i + 1, &j->addr);
}

static int
bind_int64(sqlite3_stmt *s, int i, int64_t v)
{
	return sqlite3_bind_int64(s, i, v) == SQLITE_OK ? 0 : -1;
}

/* A bind failed (too big, out of memory): log it and drop the bindings. */
static int
bind_failed(struct store *st, enum stmt id, sqlite3_stmt *s)
{
	db_err(st, id);
	stmt_done(s);
	return -1;
}

/* Step a statement that returns no rows: 0 if it changed a row, 1 if none, -1. */
static int
run_change(struct store *st, enum stmt id, sqlite3_stmt *s)
{
	int rv;

	if (sqlite3_step(s) != SQLITE_DONE) {
		db_err(st, id);
		rv = -1;
	} else
		rv = sqlite3_changes(st->db) > 0 ? 0 : 1;
	stmt_done(s);
	return rv;
}

/* Step s for at most one row and give it to row: 0, 1 no row, -1. */
static int
get_one(struct store *st, enum stmt id, sqlite3_stmt *s, row_fn row, void *ctx)
{
	int rc, rv;

	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		rv = row(s, ctx) == 0 ? 0 : -1;
	else if (rc == SQLITE_DONE)
		rv = 1;
	else {
		db_err(st, id);
		rv = -1;
	}
	stmt_done(s);
	return rv;
}

/* Step s to its end giving each row to row; its first non-zero return stops the walk. */
static int
walk(struct store *st, enum stmt id, sqlite3_stmt *s, row_fn row, void *ctx)
{
	int rc, rv = 0;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((rv = row(s, ctx)) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(st, id);
		rv = -1;
	}
	stmt_done(s);
	return rv;
}

/* --- reading rows ------------------------------------------------------- */

/* Text column i into buf, NUL-padded; -1 if NULL or too long (the schema forbids both). */
static int
col_text(sqlite3_stmt *s, int i, char *buf, size_t size)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	int n = sqlite3_column_bytes(s, i);

	if (t == NULL || n < 0 || (size_t)n >= size)
		return -1;
	memcpy(buf, t, (size_t)n);
	memset(buf + n, 0, size - (size_t)n);
	return 0;
}

static int
col_addr(sqlite3_stmt *s, int i, struct in6_addr *a)
{
	const void *b = sqlite3_column_blob(s, i);

	if (b == NULL || sqlite3_column_bytes(s, i) != (int)sizeof(*a))
		return -1;
	memcpy(a, b, sizeof(*a));
	return 0;
}

/* The nick at column i and the address at i + 1. */
static int
col_barev(sqlite3_stmt *s, int i, struct barev_jid *j)
{
	memset(j, 0, sizeof(*j));
	if (col_text(s, i, j->nick, sizeof(j->nick)) == -1 ||
	    col_addr(s, i + 1, &j->addr) == -1) {
		log_err("store: a row with a bad nick or address");
		return -1;
	}
	return 0;
}

/* Borrowed text of column i, valid until the statement steps again. */
static const char *
col_str(sqlite3_stmt *s, int i)
{
	return (const char *)sqlite3_column_text(s, i);
}

/* USER_COLS into a struct store_user. */
static int
read_user(sqlite3_stmt *s, void *ctx)
{
	struct store_user *u = ctx;

	memset(u, 0, sizeof(*u));
	if (col_text(s, 0, u->jid, sizeof(u->jid)) == -1 ||
	    col_text(s, 1, u->nick, sizeof(u->nick)) == -1 ||
	    col_addr(s, 2, &u->addr) == -1) {
		log_err("store: a users row with a bad jid, nick or address");
		return -1;
	}
	u->created = sqlite3_column_int64(s, 3);
	return 0;
}

/* CONTACT_COLS from column i into a struct store_contact. */
static int
read_contact(sqlite3_stmt *s, int i, struct store_contact *c)
{
	const char *jid;

	memset(c, 0, sizeof(*c));
	if (col_barev(s, i, &c->who) == -1)
		return -1;
	c->port = (unsigned short)sqlite3_column_int(s, i + 2);
	c->sub_to = sqlite3_column_int(s, i + 3);
	c->sub_from = sqlite3_column_int(s, i + 4);
	jid = col_str(s, i + 5);
	if (jid != NULL && strlen(jid) >= sizeof(c->jid)) {
		log_err("store: a contact's JID is longer than %zu bytes",
		    sizeof(c->jid) - 1);
		return -1;
	}
	if (jid != NULL)
		memcpy(c->jid, jid, strlen(jid) + 1);
	return 0;
}

static int
read_contact0(sqlite3_stmt *s, void *ctx)
{
	return read_contact(s, 0, ctx);
}

/* MSG_COLS into m; its strings point into the statement's row. */
static int
read_msg(sqlite3_stmt *s, struct store_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->id = sqlite3_column_int64(s, 0);
	m->dir = (enum store_dir)sqlite3_column_int(s, 1);
	if (col_barev(s, 3, &m->to) == -1)
		return -1;
	m->user_jid = col_str(s, 2);
	m->sender = col_str(s, 5);
	m->stanza_id = col_str(s, 6);
	m->body = col_str(s, 7);
	m->xhtml = col_str(s, 8);
	m->receipt = sqlite3_column_int(s, 9);
	m->created = sqlite3_column_int64(s, 10);
	m->expires = sqlite3_column_int64(s, 11);
	if (m->user_jid == NULL || m->sender == NULL || m->body == NULL) {
		log_err(
		    "store: queue row %lld has a NULL text", (long long)m->id);
		return -1;
	}
	return 0;
}

static int
read_int(sqlite3_stmt *s, void *ctx)
{
	*(int *)ctx = sqlite3_column_int(s, 0);
	return 0;
}

/* A count(*) statement whose only binding, if any, is done. */
static int
get_count(struct store *st, enum stmt id, sqlite3_stmt *s)
{
	int n = -1;

	if (get_one(st, id, s, read_int, &n) != 0)
		return -1;
	return n;
}

/* --- transactions ------------------------------------------------------- */

int
store_begin(struct store *st)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_BEGIN)) == NULL)
		return -1;
	return run_change(st, S_BEGIN, s) == -1 ? -1 : 0;
}

int
store_commit(struct store *st)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_COMMIT)) == NULL)
		return -1;
	return run_change(st, S_COMMIT, s) == -1 ? -1 : 0;
}

int
store_rollback(struct store *st)
{
	sqlite3_stmt *s;

	/* Some errors (disk full, I/O) already rolled back by themselves. */
	if (sqlite3_get_autocommit(st->db))
		return 0;
	if ((s = stmt_get(st, S_ROLLBACK)) == NULL)
		return -1;
	return run_change(st, S_ROLLBACK, s) == -1 ? -1 : 0;
}

/* --- users -------------------------------------------------------------- */

/* A bare JID as the caller must give it: what the users table trusts. */
static int
check_user_jid(const char *jid, const char **cause)
{
	struct jid_parts p;
	const char *c;

	if (jid_split(jid, &p, cause) == -1)
		return -1;
	if (p.resource != NULL) {
		*cause = "a bare JID is needed, without a resource";
		return -1;
	}
	for (c = jid; *c != '\0'; c++) {
		if (*c >= 'A' && *c <= 'Z') {
			*cause = "the JID must be in lower case";
			return -1;
		}
	}
	return 0;
}

int
store_user_add(struct store *st, const char *jid, const char *nick,
    const struct in6_addr *addr, const char **cause)
{
	sqlite3_stmt *s;
	int rc, rv = -1;

	if (check_user_jid(jid, cause) == -1 ||
	    barev_nick_check(nick, strnlen(nick, BAREV_NICK_MAX + 1), cause) ==
		-1)
		return -1;
	*cause = "database error";
	if ((s = stmt_get(st, S_USER_ADD)) == NULL)
		return -1;
	if (bind_text(s, 1, jid) == -1 || bind_text(s, 2, nick) == -1 ||
	    bind_addr(s, 3, addr) == -1)
		return bind_failed(st, S_USER_ADD, s);
	/* The two refusals a person can cause are answers, not errors. */
	switch ((rc = sqlite3_step(s))) {
	case SQLITE_DONE:
		rv = 0;
		break;
	case SQLITE_CONSTRAINT_PRIMARYKEY:
		*cause = "already registered";
		break;
	case SQLITE_CONSTRAINT_UNIQUE:
		*cause = "nick taken";
		break;
	default:
		db_err(st, S_USER_ADD);
		break;
	}
	stmt_done(s);
	return rv;
}

int
store_user_get(struct store *st, const char *jid, struct store_user *out)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USER_GET)) == NULL)
		return -1;
	if (bind_text(s, 1, jid) == -1)
		return bind_failed(st, S_USER_GET, s);
	return get_one(st, S_USER_GET, s, read_user, out);
}

int
store_user_by_nick(struct store *st, const char *nick,
    const struct in6_addr *addr, struct store_user *out)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USER_BY_NICK)) == NULL)
		return -1;
	if (bind_addr(s, 1, addr) == -1 || bind_text(s, 2, nick) == -1)
		return bind_failed(st, S_USER_BY_NICK, s);
	return get_one(st, S_USER_BY_NICK, s, read_user, out);
}

int
store_user_count_at(struct store *st, const struct in6_addr *addr)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USER_COUNT_AT)) == NULL)
		return -1;
	if (bind_addr(s, 1, addr) == -1)
		return bind_failed(st, S_USER_COUNT_AT, s);
	return get_count(st, S_USER_COUNT_AT, s);
}

int
store_user_del(struct store *st, const char *jid)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USER_DEL)) == NULL)
		return -1;
	if (bind_text(s, 1, jid) == -1)
		return bind_failed(st, S_USER_DEL, s);
	return run_change(st, S_USER_DEL, s);
}

int
store_user_set_addr(
    struct store *st, const char *jid, const struct in6_addr *addr)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USER_SET_ADDR)) == NULL)
		return -1;
	if (bind_text(s, 1, jid) == -1 || bind_addr(s, 2, addr) == -1)
		return bind_failed(st, S_USER_SET_ADDR, s);
	return run_change(st, S_USER_SET_ADDR, s);
}

struct users_walk {
	int (*fn)(void *, const struct store_user *);
	void *arg;
};

static int
users_row(sqlite3_stmt *s, void *ctx)
{
	struct users_walk *w = ctx;
	struct store_user u;

	if (read_user(s, &u) == -1)
		return -1;
	return w->fn(w->arg, &u);
}

int
store_users_each(struct store *st,
    int (*fn)(void *arg, const struct store_user *u), void *arg)
{
	struct users_walk w = { fn, arg };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_USERS_EACH)) == NULL)
		return -1;
	return walk(st, S_USERS_EACH, s, users_row, &w);
}

/* --- contacts ----------------------------------------------------------- */

int
store_contact_put(
    struct store *st, const char *user_jid, const struct store_contact *c)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_CONTACT_PUT)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 ||
	    bind_barev(s, 2, &c->who) == -1 ||
	    bind_int64(s, 4, c->port) == -1 ||
	    bind_int64(s, 5, c->sub_to != 0) == -1 ||
	    bind_int64(s, 6, c->sub_from != 0) == -1 ||
	    bind_text(s, 7, c->jid[0] != '\0' ? c->jid : NULL) == -1)
		return bind_failed(st, S_CONTACT_PUT, s);
	return run_change(st, S_CONTACT_PUT, s) == -1 ? -1 : 0;
}

int
store_contact_get(struct store *st, const char *user_jid,
    const struct barev_jid *who, struct store_contact *out)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_CONTACT_GET)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 || bind_barev(s, 2, who) == -1)
		return bind_failed(st, S_CONTACT_GET, s);
	return get_one(st, S_CONTACT_GET, s, read_contact0, out);
}

int
store_contact_del(
    struct store *st, const char *user_jid, const struct barev_jid *who)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_CONTACT_DEL)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 || bind_barev(s, 2, who) == -1)
		return bind_failed(st, S_CONTACT_DEL, s);
	return run_change(st, S_CONTACT_DEL, s);
}

struct contacts_walk {
	int (*fn)(void *, const struct store_contact *);
	int (*fn_at)(void *, const char *, const struct store_contact *);
	void *arg;
};

static int
contacts_row(sqlite3_stmt *s, void *ctx)
{
	struct contacts_walk *w = ctx;
	struct store_contact c;

	if (read_contact(s, 0, &c) == -1)
		return -1;
	return w->fn(w->arg, &c);
}

int
store_contacts_each(struct store *st, const char *user_jid,
    int (*fn)(void *arg, const struct store_contact *c), void *arg)
{
	struct contacts_walk w = { fn, NULL, arg };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_CONTACTS_EACH)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1)
		return bind_failed(st, S_CONTACTS_EACH, s);
	return walk(st, S_CONTACTS_EACH, s, contacts_row, &w);
}

static int
contacts_at_row(sqlite3_stmt *s, void *ctx)
{
	struct contacts_walk *w = ctx;
	struct store_contact c;
	const char *user_jid = col_str(s, 0);

	if (user_jid == NULL || read_contact(s, 1, &c) == -1)
		return -1;
	return w->fn_at(w->arg, user_jid, &c);
}

int
store_contacts_at(struct store *st, const struct in6_addr *addr,
    int (*fn)(void *arg, const char *user_jid, const struct store_contact *c),
    void *arg)
{
	struct contacts_walk w = { NULL, fn, arg };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_CONTACTS_AT)) == NULL)
		return -1;
	if (bind_addr(s, 1, addr) == -1)
		return bind_failed(st, S_CONTACTS_AT, s);
	return walk(st, S_CONTACTS_AT, s, contacts_at_row, &w);
}

/* --- pending requests --------------------------------------------------- */

int
store_pending_put(struct store *st, const char *user_jid,
    const struct barev_jid *who, int64_t now)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_PENDING_PUT)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 || bind_barev(s, 2, who) == -1 ||
	    bind_int64(s, 4, now) == -1)
		return bind_failed(st, S_PENDING_PUT, s);
	return run_change(st, S_PENDING_PUT, s) == -1 ? -1 : 0;
}

int
store_pending_del(
    struct store *st, const char *user_jid, const struct barev_jid *who)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_PENDING_DEL)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 || bind_barev(s, 2, who) == -1)
		return bind_failed(st, S_PENDING_DEL, s);
	return run_change(st, S_PENDING_DEL, s);
}

struct pending_walk {
	int (*fn)(
	    void *, const char *, const struct barev_jid *, int64_t, int64_t);
	void *arg;
};

static int
pending_row(sqlite3_stmt *s, void *ctx)
{
	struct pending_walk *w = ctx;
	struct barev_jid who;
	const char *user_jid = col_str(s, 0);

	if (user_jid == NULL || col_barev(s, 1, &who) == -1)
		return -1;
	return w->fn(w->arg, user_jid, &who, sqlite3_column_int64(s, 3),
	    sqlite3_column_int64(s, 4));
}

int
store_pending_each(struct store *st, int64_t after,
    int (*fn)(void *arg, const char *user_jid, const struct barev_jid *who,
	int64_t created, int64_t last_asked),
    void *arg)
{
	struct pending_walk w = { fn, arg };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_PENDING_EACH)) == NULL)
		return -1;
	if (bind_int64(s, 1, after) == -1)
		return bind_failed(st, S_PENDING_EACH, s);
	return walk(st, S_PENDING_EACH, s, pending_row, &w);
}

int
store_pending_expire(struct store *st, int64_t upto)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_PENDING_EXPIRE)) == NULL)
		return -1;
	if (bind_int64(s, 1, upto) == -1)
		return bind_failed(st, S_PENDING_EXPIRE, s);
	if (run_change(st, S_PENDING_EXPIRE, s) == -1)
		return -1;
	return sqlite3_changes(st->db);
}

/* --- message queue ------------------------------------------------------ */

int64_t
store_msg_add(struct store *st, const struct store_msg *m)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_ADD)) == NULL)
		return -1;
	if (bind_int64(s, 1, m->dir) == -1 ||
	    bind_text(s, 2, m->user_jid) == -1 ||
	    bind_barev(s, 3, &m->to) == -1 ||
	    bind_text(s, 5, m->sender) == -1 ||
	    bind_text(s, 6, m->stanza_id) == -1 ||
	    bind_text(s, 7, m->body) == -1 || bind_text(s, 8, m->xhtml) == -1 ||
	    bind_int64(s, 9, m->receipt != 0) == -1 ||
	    bind_int64(s, 10, m->created) == -1 ||
	    bind_int64(s, 11, m->expires) == -1)
		return bind_failed(st, S_MSG_ADD, s);
	if (run_change(st, S_MSG_ADD, s) == -1)
		return -1;
	return sqlite3_last_insert_rowid(st->db);
}

struct msg_walk {
	int (*fn)(void *, const struct store_msg *);
	void *arg;
	int64_t last; /* id of the last message fn was called for */
};

static int
msg_row(sqlite3_stmt *s, void *ctx)
{
	struct msg_walk *w = ctx;
	struct store_msg m;

	if (read_msg(s, &m) == -1)
		return -1;
	w->last = m.id;
	return w->fn(w->arg, &m);
}

int
store_msg_each_for(struct store *st, const char *user_jid,
    const struct barev_jid *to, int (*fn)(void *arg, const struct store_msg *m),
    void *arg)
{
	return store_msg_each_after(st, user_jid, to, 0, fn, arg);
}

int
store_msg_each_after(struct store *st, const char *user_jid,
    const struct barev_jid *to, int64_t after,
    int (*fn)(void *arg, const struct store_msg *m), void *arg)
{
	struct msg_walk w = { fn, arg, 0 };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_EACH_FOR)) == NULL)
		return -1;
	if (bind_text(s, 1, user_jid) == -1 || bind_barev(s, 2, to) == -1 ||
	    sqlite3_bind_int64(s, 4, after) != SQLITE_OK)
		return bind_failed(st, S_MSG_EACH_FOR, s);
	return walk(st, S_MSG_EACH_FOR, s, msg_row, &w);
}

int
store_msg_each_to_xmpp(struct store *st,
    int (*fn)(void *arg, const struct store_msg *m), void *arg)
{
	struct msg_walk w = { fn, arg, 0 };
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_TO_XMPP)) == NULL)
		return -1;
	return walk(st, S_MSG_TO_XMPP, s, msg_row, &w);
}

int
store_msg_del(struct store *st, int64_t id)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_DEL)) == NULL)
		return -1;
	if (bind_int64(s, 1, id) == -1)
		return bind_failed(st, S_MSG_DEL, s);
	return run_change(st, S_MSG_DEL, s);
}

int
store_msg_set_lifetime(struct store *st, int64_t seconds)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_LIFETIME)) == NULL)
		return -1;
	if (bind_int64(s, 1, seconds) == -1)
		return bind_failed(st, S_MSG_LIFETIME, s);
	return run_change(st, S_MSG_LIFETIME, s) == -1 ? -1 : 0;
}

int
store_msg_take_expired(struct store *st, int64_t now,
    int (*fn)(void *arg, const struct store_msg *m), void *arg)
{
	struct msg_walk w = { fn, arg, 0 };
	sqlite3_stmt *s;
	int rv;

	if ((s = stmt_get(st, S_MSG_EXPIRED)) == NULL)
		return -1;
	if (bind_int64(s, 1, now) == -1)
		return bind_failed(st, S_MSG_EXPIRED, s);
	rv = walk(st, S_MSG_EXPIRED, s, msg_row, &w);
	if (w.last == 0)
		return rv;
	/*
	 * Rows come in id order and new ids are larger than every old one,
	 * so the expired rows up to the last id are exactly those fn saw:
	 * they go even if the walk stopped, or they would be reported twice.
	 */
	if ((s = stmt_get(st, S_MSG_DEL_EXPIRED)) == NULL)
		return -1;
	if (bind_int64(s, 1, now) == -1 || bind_int64(s, 2, w.last) == -1)
		return bind_failed(st, S_MSG_DEL_EXPIRED, s);
	if (run_change(st, S_MSG_DEL_EXPIRED, s) == -1)
		return -1;
	return rv;
}

int
store_msg_count(struct store *st)
{
	sqlite3_stmt *s;

	if ((s = stmt_get(st, S_MSG_COUNT)) == NULL)
		return -1;
	return get_count(st, S_MSG_COUNT, s);
}
