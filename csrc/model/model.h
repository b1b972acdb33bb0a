/* Internal layout of a loaded GPT-NeoX model. */
#ifndef SS_MODEL_H
#define SS_MODEL_H

#include "specstream.h"

typedef struct {
    /* stored as ss_model.wtype, quantized formats with their scales
     * (layouts: kernels/cpu/formats.h) */
    const void *qkv_w, *out_w, *fc1_w, *fc2_w;
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    float *qkv_b, *out_b, *fc1_b, *fc2_b;
} ss_layer;

struct ss_model {
    ss_model_config cfg;
    int device;        /* ss_device (model/backend.h)               */
    void *cuda;        /* device-side weights of the CUDA backend   */
    int head_dim;
    ss_dtype wtype;    /* storage of the weight matrices                  */
    ss_dtype etype;    /* storage of embed_in: wtype, except for quantized
                          formats (int8, int4), where it keeps its given
                          dtype (one row is read per token, so quantizing
                          saves nothing) */
    ss_layer *layers;
    const void *embed_in;  /* stored as etype */
    const void *embed_out; /* stored as wtype */
    float *final_ln_w, *final_ln_b;
    void **owned; /* every buffer the model allocated */
    size_t n_owned, cap_owned;
};

#endif
