/* Compute backends. The host side of a forward (csrc/model/forward.c) checks
 * the input, advances the eviction schedule and fills state->views and the
 * rotary tables (rot_* at text positions, pin_* at cache positions) for the n
 * new tokens; a backend then runs embedding, layers and unembedding for that
 * batch against the state's KV storage. Views tell each token where its key
 * goes (slot of `index`) and which keys it sees: the sink/pinned slots
 * [0, n_pinned), the window run [lo, hi] in the ring, and a tree token's
 * ancestors (state->ancestor_slots; ss_cache_runs). */
#ifndef SS_BACKEND_H
#define SS_BACKEND_H

#include "specstream.h"

typedef enum { SS_DEVICE_CPU = 0, SS_DEVICE_CUDA = 1 } ss_device;

/* Outputs of the last n_out tokens: logits and/or final hidden states. */
ss_status ss_cpu_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n,
                           float *logits, float *hidden, int n_out, ss_error *err);

/* CUDA backend (csrc/kernels/cuda/). Without a CUDA build these report
 * SS_ERR_UNSUPPORTED (csrc/model/cuda_none.c). */
int ss_cuda_device_count(void);
ss_status ss_cuda_model_init(ss_model *m, ss_error *err);   /* weights -> GPU */
void ss_cuda_model_release(ss_model *m);
ss_status ss_cuda_state_init(ss_state *s, ss_error *err);   /* KV + scratch on GPU */
void ss_cuda_state_release(ss_state *s);
ss_status ss_cuda_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n,
                            float *logits, float *hidden, int n_out, ss_error *err);

#endif
