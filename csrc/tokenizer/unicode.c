#include "unicode.h"

#include <stddef.h>

#include "unicode_tables.h"

_Static_assert(TOK_UNI_LOW == 0x800, "unicode.h assumes the direct table covers U+0000..U+07FF");

uint8_t tok_uni_class_high(uint32_t cp) {
    size_t lo = 0, hi = TOK_UNI_N_RANGES;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < tok_uni_ranges[mid].lo)
            hi = mid;
        else if (cp > tok_uni_ranges[mid].hi)
            lo = mid + 1;
        else
            return tok_uni_ranges[mid].mask;
    }
    return 0;
}
