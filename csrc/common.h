/* Internal helpers shared by the C core: error reporting, aligned memory,
 * clocks. Not part of the public API. */
#ifndef SS_COMMON_H
#define SS_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "specstream.h"

/* Formats a message into err (when non-NULL) and returns status, so that a
 * failure reads as one line: return ss_fail(err, SS_ERR_SHAPE, "...", ...); */
ss_status ss_fail(ss_error *err, ss_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Zero-filled allocation; large requests are served by fresh zero pages, so
 * untouched parts cost no resident memory. NULL on overflow or failure. Kernels
 * use unaligned loads, so no alignment beyond malloc's is assumed. */
void *ss_alloc(size_t count, size_t size);
void ss_free(void *p);

/* Monotonic clock in seconds. */
double ss_now(void);

static inline int64_t ss_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ss_max64(int64_t a, int64_t b) { return a > b ? a : b; }

#endif
