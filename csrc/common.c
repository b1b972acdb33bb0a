#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

ss_status ss_fail(ss_error *err, ss_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

void *ss_alloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    /* calloc maps large blocks from fresh zero pages without touching them. */
    return calloc(count ? count : 1, size ? size : 1);
}

void ss_free(void *p) { free(p); }

double ss_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
