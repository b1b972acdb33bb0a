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
/* Zero-filled and 64-byte aligned (a cache line: what the AMX kernels load
 * whole), for weight matrices the model stores itself; freed by ss_free. */
void *ss_alloc_aligned(size_t bytes);
void ss_free(void *p);

/* Scratch memory owned by the calling thread: buffer `slot` (0 to
 * SS_SCRATCH_SLOTS - 1) with room for at least `bytes`, 64-byte aligned,
 * grown on demand, kept for later calls and freed when the thread exits
 * (short-lived Python threads must not leak it). NULL on failure. */
enum { SS_SCRATCH_SLOTS = 4, SS_SCRATCH_GEMM_PACK = 0, SS_SCRATCH_PACK_X = 1, SS_SCRATCH_TILES = 2 };
void *ss_thread_scratch(int slot, size_t bytes);

/* Monotonic clock in seconds. */
double ss_now(void);

static inline int64_t ss_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ss_max64(int64_t a, int64_t b) { return a > b ? a : b; }

#endif
