/* Picks a drafter by method. */
#include "spec/drafter.h"

#include "common.h"

ss_status ss_drafter_create(const ss_draft_sources *src, ss_drafter **out, ss_error *err) {
    *out = NULL;
    switch (src->spec->method) {
    case SS_SPEC_NONE: return SS_OK;
    case SS_SPEC_DRAFT:
    case SS_SPEC_TREE: return ss_drafter_model(src, out, err);
    case SS_SPEC_LOOKUP: return ss_drafter_lookup(src, out, err);
    case SS_SPEC_LOOKAHEAD: return ss_drafter_lookahead(src, out, err);
    case SS_SPEC_MEDUSA: return ss_drafter_medusa(src, out, err);
    default: return ss_fail(err, SS_ERR_INVALID_ARGUMENT, "unknown speculative method %d", src->spec->method);
    }
}
