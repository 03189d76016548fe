/*
 * Runs a libFuzzer target over a corpus, printing TAP, so make check replays
 * every fuzz corpus without libFuzzer.  With arguments: every regular file in
 * those directories.  Without: $FUZZ_CORPUS/<name> for a program called
 * replay_<name>.  A missing or empty corpus fails; a crash kills the run.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xmalloc.h"

#define PREFIX "replay_"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct files {
	char **path;
	size_t n, cap;
};

static void __attribute__((noreturn)) bail(const char *why, const char *what)
{
	/* One failing test, so no TAP driver can count this as a pass. */
	printf("1..1\nnot ok 1 - %s: %s\n", why, what);
	exit(1);
}

static void
files_add(struct files *f, char *path)
{
	if (f->n == f->cap) {
		f->cap = f->cap != 0 ? f->cap * 2 : 64;
		f->path = xrealloc(f->path, f->cap * sizeof(*f->path));
	}
	f->path[f->n++] = path;
}

/* Every regular file directly in dir, sorted so runs are comparable. */
static void
scan(struct files *f, const char *dir)
{
	struct dirent **ents;
	struct stat sb;
	char *path;
	int i, n;

	if ((n = scandir(dir, &ents, NULL, alphasort)) == -1)
		bail("cannot read corpus directory", dir);
	for (i = 0; i < n; i++) {
		xasprintf(&path, "%s/%s", dir, ents[i]->d_name);
		if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
			files_add(f, path);
		else
			free(path);
		free(ents[i]);
	}
	free(ents);
}

static int
replay(const char *path)
{
	uint8_t *data;
	size_t size;
	FILE *fp;
	long len;

	if ((fp = fopen(path, "rb")) == NULL)
		return -1;
	if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) != 0) {
		fclose(fp);
		return -1;
	}
	size = (size_t)len;
	data = xmalloc(size);
	if (fread(data, 1, size, fp) != size) {
		free(data);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	return 0;
}

/* $FUZZ_CORPUS/<name>, <name> taken from replay_<name>. */
static char *
default_dir(const char *argv0)
{
	const char *base, *root;
	char *dir;

	base = strrchr(argv0, '/');
	base = base != NULL ? base + 1 : argv0;
	if (strncmp(base, PREFIX, strlen(PREFIX)) != 0 ||
	    base[strlen(PREFIX)] == '\0')
		bail("no directory given and no replay_<name> program name",
		    base);
	if ((root = getenv("FUZZ_CORPUS")) == NULL || *root == '\0')
		bail("no directory given and FUZZ_CORPUS is not set", base);
	xasprintf(&dir, "%s/%s", root, base + strlen(PREFIX));
	return dir;
}

int
main(int argc, char **argv)
{
	struct files f = { 0 };
	char *dir;
	size_t i;
	int failed = 0;

	if (argc > 1) {
		for (i = 1; i < (size_t)argc; i++)
			scan(&f, argv[i]);
		if (f.n == 0)
			bail("no corpus files in", argv[1]);
	} else {
		dir = default_dir(argv[0]);
		scan(&f, dir);
		if (f.n == 0)
			bail("no corpus files in", dir);
		free(dir);
	}
	printf("1..%zu\n", f.n);
	for (i = 0; i < f.n; i++) {
		/* A diagnostic first, so a crash shows which file it was. */
		printf("# %s\n", f.path[i]);
		fflush(stdout);
		if (replay(f.path[i]) == 0)
			printf("ok %zu - %s\n", i + 1, f.path[i]);
		else {
			printf("not ok %zu - %s: cannot read it\n", i + 1,
			    f.path[i]);
			failed = 1;
		}
		free(f.path[i]);
	}
	free(f.path);
	return failed;
}
