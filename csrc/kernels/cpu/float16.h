/* Scalar conversions between f32 and the two 16-bit float formats (IEEE
 * half, f16; bfloat16, bf16): exact towards f32, round to nearest even from
 * f32. The portable path and the SIMD kernels' tails use them; the SIMD
 * conversions they stand for give the same bits. */
#ifndef SS_FLOAT16_H
#define SS_FLOAT16_H

#include <stdint.h>
#include <string.h>

static inline float ss_bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint32_t ss_f32_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

static inline float ss_bf16_to_f32(uint16_t h) { return ss_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t ss_f32_to_bf16(float f) {
    uint32_t bits = ss_f32_to_bits(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

static inline float ss_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    return ss_bits_to_f32(bits);
}

static inline uint16_t ss_f32_to_f16(float f) {
    const uint32_t bits = ss_f32_to_bits(f);
    const uint32_t sign = (bits >> 16) & 0x8000, abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
    if (abs < 0x38800000u) {                                  /* subnormal or zero */
        if (abs < 0x33000000u) return (uint16_t)sign;
        const uint32_t mant = (abs & 0x7fffff) | 0x800000;
        const int shift = 126 - (int)(abs >> 23); /* 14..24 */
        uint32_t half = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1);
    return (uint16_t)(sign | (((rounded >> 23) - 127 + 15) << 10) | ((rounded >> 13) & 0x3ff));
}

#endif
