#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
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

void *ss_alloc_aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

void ss_free(void *p) { free(p); }

double ss_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    void *buf[SS_SCRATCH_SLOTS];
    size_t cap[SS_SCRATCH_SLOTS];
} thread_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p) {
    thread_scratch *t = p;
    for (int i = 0; i < SS_SCRATCH_SLOTS; i++) free(t->buf[i]);
    free(t);
}

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

void *ss_thread_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= SS_SCRATCH_SLOTS) return NULL;
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok) return NULL;
    thread_scratch *t = pthread_getspecific(scratch_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t || pthread_setspecific(scratch_key, t) != 0) {
            free(t);
            return NULL;
        }
    }
    if (bytes > t->cap[slot]) {
        void *grown = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!grown) return NULL;
        free(t->buf[slot]);
        t->buf[slot] = grown;
        t->cap[slot] = bytes;
    }
    return t->buf[slot];
}
