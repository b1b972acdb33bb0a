/* The CUDA entry points of a build without CUDA: every call explains why it
 * cannot run. */
#ifndef SS_WITH_CUDA
#include "common.h"
#include "model/backend.h"

int ss_cuda_device_count(void) { return 0; }

ss_status ss_cuda_model_init(ss_model *m, ss_error *err) {
    (void)m;
    return ss_fail(err, SS_ERR_UNSUPPORTED, "this build of specstream has no CUDA backend "
                                            "(rebuild with a CUDA toolkit or SPECSTREAM_CUDA=1)");
}

void ss_cuda_model_release(ss_model *m) { (void)m; }

ss_status ss_cuda_state_init(ss_state *s, ss_error *err) {
    (void)s;
    return ss_fail(err, SS_ERR_UNSUPPORTED, "this build of specstream has no CUDA backend");
}

void ss_cuda_state_release(ss_state *s) { (void)s; }

ss_status ss_cuda_run_batch(const ss_model *m, ss_state *s, const int32_t *tokens, int n, float *logits, float *hidden,
                            int n_out, ss_error *err) {
    (void)m; (void)s; (void)tokens; (void)n; (void)logits; (void)hidden; (void)n_out;
    return ss_fail(err, SS_ERR_UNSUPPORTED, "this build of specstream has no CUDA backend");
}
#endif
