/* Error, file and argument helpers shared by the command-line tools (vlmc_decode_latents,
 * vlmc_write_stream, vlmc_encode); plain C, static functions, not installed. */
#ifndef VLMC_TOOL_IO_H
#define VLMC_TOOL_IO_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* The tool's messages: "TOOL: error: what" on stderr; the exit status 2. Each tool defines
 * VLMC_TOOL_NAME (a string) before including this. */
static int error(const char *what) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: %s\n", what);
    return 2;
}

/* The whole file, malloc'd (*size bytes; a 1-byte buffer when empty); NULL when unreadable. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    if (f == NULL) return NULL;
    do {
        if (n == cap) {
            unsigned char *more = realloc(buf, cap ? 2 * cap : 1 << 16);
            if (more == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = more;
            cap = cap ? 2 * cap : 1 << 16;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n;
    return buf ? buf : malloc(1);
}

/* Writes header (may be NULL) then n bytes of buf to path; 1 on success. */
static int write_file(const char *path, const char *header, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && (header == NULL || fputs(header, f) >= 0) && fwrite(buf, 1, n, f) == n;
    if (f != NULL && fclose(f) != 0) ok = 0;
    return ok;
}

/* A whole decimal number in [0, max] into *out; 0 (nothing parsed) otherwise. */
static int parse_count(const char *text, unsigned long long max, unsigned long long *out) {
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') return 0; /* no sign, no space */
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno == 0 && *end == '\0' && *out <= max;
}

/* "option takes expected, got 'value'" as error(); the exit status 2. */
static int bad_value(const char *option, const char *expected, const char *value) {
    fprintf(stderr, VLMC_TOOL_NAME ": error: %s takes %s, got '%s'\n", option, expected, value);
    return 2;
}

/* A number in [0, 100] into *q; 0 otherwise. */
static int parse_quality(const char *text, double *q) {
    char *end = NULL;
    if (text == NULL || *text == '\0') return 0;
    errno = 0;
    *q = strtod(text, &end);
    return errno == 0 && *end == '\0' && *q >= 0.0 && *q <= 100.0;
}

#endif /* VLMC_TOOL_IO_H */
