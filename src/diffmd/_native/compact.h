// Compaction of kept slots, shared by the cell-list build and the generated pair kernels.
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace diffmd {

// Appends ids[k] for every k < size with keep[k] ≠ 0 to out, in order; returns how many. out
// needs 16 entries of room beyond them (whole vectors are stored).
inline int64_t AppendKept(const int32_t* ids, const int32_t* keep, int64_t size, int32_t* out) {
  int64_t count = 0;
#if defined(__AVX512F__)
  for (int64_t k = 0; k < size; k += 16) {
    const __mmask16 lanes = size - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (size - k)) - 1);
    const __mmask16 mask =
        _mm512_mask_test_epi32_mask(lanes, _mm512_maskz_loadu_epi32(lanes, keep + k), _mm512_set1_epi32(-1));
    _mm512_storeu_si512(out + count, _mm512_maskz_compress_epi32(mask, _mm512_maskz_loadu_epi32(lanes, ids + k)));
    count += __builtin_popcount(mask);
  }
#else
  for (int64_t k = 0; k < size; ++k) {  // branch-free compaction
    out[count] = ids[k];
    count += keep[k] != 0;
  }
#endif
  return count;
}

}  // namespace diffmd
