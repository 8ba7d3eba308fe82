/* Error, file and argument helpers shared by the command-line tools (vlmc_decode_latents,
 * vlmc_write_stream, vlmc_encode); plain C, static functions, not installed. */
#ifndef VLMC_TOOL_IO_H
#define VLMC_TOOL_IO_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

/* The tool's messages: "TOOL: error: what" on stderr; the exit status 2. Each tool defines
 * VLMC_TOOL_NAME (a string) before including this. */
static int error(const char *what) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: %s\n", what);
    return 2;
}

/* The rest of the open file f after the n_head bytes already read from it (head), malloc'd with
 * them (*size bytes in all; a 1-byte buffer when empty); f is closed. NULL with errno saying why
 * when unreadable (a read that fails part way, or at once as a folder's does, included: it gave a
 * 1-byte buffer announced as the bytes read until then), errno EFBIG where it holds more than
 * limit bytes (0: no limit; a pipe or /dev/zero is not sized before it is read, as a file is). */
static unsigned char *read_rest(FILE *f, const unsigned char *head, size_t n_head, size_t *size, size_t limit) {
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    int err;
    do {
        if (n == cap) {
            const size_t want = cap ? 2 * cap : 1 << 16;
            unsigned char *more = cap > SIZE_MAX / 2 ? NULL : realloc(buf, want); /* (2·cap wraps: 32-bit) */
            if (more == NULL) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = more;
            cap = want;
            if (n == 0 && n_head) memcpy(buf, head, n = n_head); /* (n_head <= 16 < the first cap) */
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (limit && n > limit) {
            free(buf);
            fclose(f);
            errno = EFBIG;
            return NULL;
        }
    } while (got > 0);
    if (ferror(f)) {
        err = errno;
        free(buf);
        fclose(f);
        errno = err;
        return NULL;
    }
    fclose(f);
    *size = n;
    return buf ? buf : malloc(1);
}

/* The whole file, as read_rest gives it. */
static unsigned char *read_file(const char *path, size_t *size, size_t limit) {
    FILE *f = fopen(path, "rb");
    return f == NULL ? NULL : read_rest(f, NULL, 0, size, limit);
}

/* The whole file where it begins with one of the magics (each n <= 16 bytes, one after another
 * in magics: "P6P5" is two of 2); *other = 1 and NULL where it begins with none (or is shorter),
 * NULL with errno where it is unreadable or above limit (see read_rest). The file is opened once and its first bytes looked at
 * before the rest is read: a large file of something else (an image, a video given as the stream)
 * is refused from them, not after all of it is in memory, and a pipe (/dev/stdin) works. */
static unsigned char *read_file_with_magic(const char *path, const char *magics, size_t n, size_t *size, size_t limit,
                                           int *other) {
    unsigned char head[16];
    size_t got, k;
    int err;
    FILE *f = fopen(path, "rb");
    *other = 0;
    if (f == NULL) return NULL;
    got = n <= sizeof head ? fread(head, 1, n, f) : 0;
    if (ferror(f)) {
        err = errno;
        fclose(f);
        errno = err;
        return NULL;
    }
    for (k = 0; got == n && k + n <= strlen(magics); k += n)
        if (memcmp(head, magics + k, n) == 0) return read_rest(f, head, n, size, limit);
    fclose(f);
    *other = 1;
    return NULL;
}

/* "TOOL: error: cannot read WHAT PATH: why" (errno's words) on stderr; the exit status 2. */
static int cannot_read(const char *what, const char *path) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: cannot read %s %s: %s\n", what, path, strerror(errno));
    return 2;
}

/* The tool's last step on success: its JSON line must have reached standard output (a full disk,
 * a closed pipe: exit status 2, not 0 with nothing written). */
static int finish_stdout(void) {
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    fprintf(stderr, VLMC_TOOL_NAME ": error: cannot write to standard output: %s\n", strerror(errno));
    return 2;
}

/* The value of the option at argv[i]: NULL where it has none — at the end of the arguments, or
 * where the next is another option ("--image --info" wrote the image to a file named --info). A
 * value may begin with one dash (a negative number, refused by its parser with its own words). */
static const char *option_value(int argc, char **argv, int i) {
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    return value == NULL || (value[0] == '-' && value[1] == '-') ? NULL : value;
}

/* A path argument that begins with a dash: refused (exit 2, naming it; with the usage), as the
 * tools take no short options and no "-" for standard input or output; 0 for any other argument. */
static int refuses_dash(const char *arg, const char *usage) {
    if (arg[0] != '-') return 0;
    if (arg[1] == '\0')
        fprintf(stderr, VLMC_TOOL_NAME ": error: '-' is not read as standard input or output here: give a path "
                "(/dev/stdin, /dev/stdout)\n");
    else
        fprintf(stderr, VLMC_TOOL_NAME ": error: unknown option %s (a path that begins with '-': ./%s)\n%s\n", arg,
                arg, usage);
    return 1;
}

/* Whether arg asks for the usage (--help, -h): then it is printed on standard output. */
static int asks_help(const char *arg, const char *usage) {
    if (strcmp(arg, "--help") != 0 && strcmp(arg, "-h") != 0) return 0;
    printf("%s\n", usage);
    return 1;
}

/* "TOOL: error: cannot write PATH: why" (errno err's words) on stderr; 0, write_file's failure. */
static int write_failed(const char *path, int err) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: cannot write %s: %s\n", path, strerror(err));
    return 0;
}

/* Writes header (may be NULL) then n bytes of buf to f, and closes it; 1 on success, else 0 with
 * errno saying why. */
static int put_and_close(FILE *f, const char *header, const void *buf, size_t n) {
    int ok = (header == NULL || fputs(header, f) >= 0) && fwrite(buf, 1, n, f) == n && fflush(f) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    errno = err;
    return ok;
}

/* The write of a plain fopen: a FIFO, a device, or a new file through a dangling link. */
static int write_in_place(const char *path, const char *header, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    return f != NULL && put_and_close(f, header, buf, n) ? 1 : write_failed(path, errno);
}

#if defined(_WIN32)
static int write_file(const char *path, const char *header, const void *buf, size_t n) {
    return write_in_place(path, header, buf, n);
}
#else
/* The temporary file replace_whole is writing: a signal that would end the tool meanwhile (Ctrl-C, a
 * kill, a hang-up, a file size limit's SIGXFSZ) removes it first, then takes its own default action;
 * without this a killed write of a large image left a hidden .vlmc-XXXXXX beside its target. */
static const int vlmc_fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGXFSZ};
#define VLMC_N_FATAL (sizeof vlmc_fatal_signals / sizeof vlmc_fatal_signals[0])
static char vlmc_tmp_path[4096];
static volatile sig_atomic_t vlmc_tmp_live;

static void vlmc_remove_tmp_and_die(int sig) {
    if (vlmc_tmp_live) unlink(vlmc_tmp_path); /* (async-signal-safe) */
    signal(sig, SIG_DFL);
    raise(sig); /* delivered once the handler returns: the default action, as without the handler */
}

/* Installs the handler for the fatal signals left at their default action (one ignored or handled by
 * the tool stays so), saving the old actions into old. */
static void vlmc_guard_tmp(struct sigaction old[VLMC_N_FATAL]) {
    struct sigaction act;
    size_t i;
    memset(&act, 0, sizeof act);
    act.sa_handler = vlmc_remove_tmp_and_die;
    sigemptyset(&act.sa_mask);
    for (i = 0; i < VLMC_N_FATAL; i++)
        if (sigaction(vlmc_fatal_signals[i], NULL, &old[i]) == 0 && old[i].sa_handler == SIG_DFL)
            sigaction(vlmc_fatal_signals[i], &act, NULL);
}

static void vlmc_unguard_tmp(const struct sigaction old[VLMC_N_FATAL]) {
    size_t i;
    vlmc_tmp_live = 0;
    for (i = 0; i < VLMC_N_FATAL; i++)
        if (old[i].sa_handler == SIG_DFL) sigaction(vlmc_fatal_signals[i], &old[i], NULL);
}

/* header and buf into a new temporary file beside dest (a file's path), given mode, then renamed over
 * dest; 1 on success, else 0 with errno saying why and the temporary file gone (by a fatal signal too). */
static int replace_whole(const char *dest, mode_t mode, const char *header, const void *buf, size_t n) {
    static const char name[] = ".vlmc-XXXXXX";
    const char *slash = strrchr(dest, '/');
    size_t dir = slash ? (size_t)(slash - dest) + 1 : 0;
    char *tmp = malloc(dir + sizeof name);
    FILE *f = NULL;
    int fd = -1, ok, err;
    struct sigaction old[VLMC_N_FATAL];
    vlmc_guard_tmp(old);
    if (tmp != NULL) {
        memcpy(tmp, dest, dir);
        memcpy(tmp + dir, name, sizeof name);
        fd = mkstemp(tmp); /* (made 0600: given the mode a plain fopen would give it next) */
        if (fd >= 0 && dir + sizeof name <= sizeof vlmc_tmp_path) {
            memcpy(vlmc_tmp_path, tmp, dir + sizeof name);
            vlmc_tmp_live = 1;
        }
    } else {
        errno = ENOMEM;
    }
    ok = fd >= 0 && fchmod(fd, mode) == 0 && (f = fdopen(fd, "wb")) != NULL;
    if (!ok && fd >= 0) {
        err = errno;
        close(fd);
        errno = err;
    }
    ok = ok && put_and_close(f, header, buf, n) && rename(tmp, dest) == 0;
    err = errno;
    if (!ok && fd >= 0) unlink(tmp);
    vlmc_unguard_tmp(old);
    free(tmp);
    errno = err;
    return ok;
}

/* Writes header (may be NULL) then n bytes of buf to path whole or not at all, as the Python side's
 * vlmcodec.files.write_whole: under a temporary name beside it, renamed over it, so that a failed
 * write (a full disk) leaves an existing file as it was and no temporary one. A new file gets the
 * umask's permissions, a replaced one keeps its own (as with a plain fopen); a FIFO or a device is
 * written in place, a link through. 1 on success; else 0, having said which path and why. */
static int write_file(const char *path, const char *header, const void *buf, size_t n) {
    struct stat st, lst;
    int exists = stat(path, &st) == 0, ok, err;
    char *target = NULL;
    mode_t mask = umask(0); /* (set back at once; no thread of the tools makes a file meanwhile) */
    umask(mask);
    if (exists && !S_ISREG(st.st_mode)) return write_in_place(path, header, buf, n);
    if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode) && (target = realpath(path, NULL)) == NULL)
        return write_in_place(path, header, buf, n); /* dangling: made through it; a loop: fopen's error */
    ok = replace_whole(target ? target : path, exists ? st.st_mode & 07777 : 0666 & ~mask, header, buf, n);
    err = errno;
    free(target);
    return ok ? 1 : write_failed(path, err);
}
#endif

/* A whole decimal number in [0, max] into *out; 0 (nothing parsed) otherwise. */
static int parse_count(const char *text, unsigned long long max, unsigned long long *out) {
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') return 0; /* no sign, no space */
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno == 0 && *end == '\0' && *out <= max;
}

/* A byte budget into *out: a whole number, any size; one beyond 2^62 (which every stream fits) is
 * taken as 2^62, as the Python search caps it (2^40 was refused as "not a whole number"). */
static int parse_budget(const char *text, unsigned long long *out) {
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') return 0;
    errno = 0;
    *out = strtoull(text, &end, 10);
    if (*end != '\0' || (errno != 0 && errno != ERANGE)) return 0;
    if (errno == ERANGE || *out > (1ull << 62)) *out = 1ull << 62;
    return 1;
}

/* "option takes expected, got 'value'" as error(); the exit status 2. */
static int bad_value(const char *option, const char *expected, const char *value) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: %s takes %s, got '%s'\n", option, expected, value);
    return 2;
}

/* x ≥ 0 rounded to a whole number as Python's round does it: half to even (x − floor(x) is exact). */
static unsigned long round_half_even(double x) {
    unsigned long r = (unsigned long)x;
    const double frac = x - (double)r;
    if (frac > 0.5 || (frac == 0.5 && (r & 1))) ++r;
    return r;
}

/* A number in [0, 100] into *q, as a stream stores it; 0 otherwise. */
static int parse_quality(const char *text, double *q) {
    char *end = NULL;
    if (text == NULL || *text == '\0' || strpbrk(text, "xX")) return 0; /* (hex: strtod's, not vlmcodec's) */
    errno = 0;
    *q = strtod(text, &end);
    if (!(errno == 0 && *end == '\0' && *q >= 0.0 && *q <= 100.0)) return 0;
    /* as a stream stores it: hundredths, half to even (50.005 printed 50.01 beside a stream of 50.00; -0: 0) */
    *q = (double)round_half_even(*q * 100.0) / 100.0;
    return 1;
}

#endif /* VLMC_TOOL_IO_H */
