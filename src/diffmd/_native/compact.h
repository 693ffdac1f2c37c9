// Compaction of kept slots, shared by the cell-list build and the generated pair kernels.
//
// No standard or intrinsics headers: the generated kernels include this, and <immintrin.h>
// alone costs half a second of every kernel's compile. The AVX-512 path uses the compiler's
// vector extensions and builtins (the ones <immintrin.h>'s intrinsics wrap; GCC and clang both
// have them).
#pragma once

namespace diffmd {

#if defined(__AVX512F__)
typedef int CompactVector __attribute__((vector_size(64)));
#endif

// Appends ids[k] for every k < size with keep[k] ≠ 0 to out, in order; returns how many. out
// needs 16 entries of room beyond them (whole vectors are stored).
inline long long AppendKept(const int* ids, const int* keep, long long size, int* out) {
  long long count = 0;
#if defined(__AVX512F__)
  const CompactVector zero = {};
  for (long long k = 0; k < size; k += 16) {
    const unsigned short lanes = size - k >= 16 ? 0xFFFF : (unsigned short)((1u << (size - k)) - 1);
    const CompactVector kept = __builtin_ia32_loaddqusi512_mask(keep + k, zero, lanes);
    const CompactVector idx = __builtin_ia32_loaddqusi512_mask(ids + k, zero, lanes);
    const unsigned short mask = __builtin_ia32_cmpd512_mask(kept, zero, 4 /* not equal */, lanes);
    const CompactVector packed = __builtin_ia32_compresssi512_mask(idx, zero, mask);
    __builtin_memcpy(out + count, &packed, sizeof(packed));
    count += __builtin_popcount(mask);
  }
#else
  for (long long k = 0; k < size; ++k) {  // branch-free compaction
    out[count] = ids[k];
    count += keep[k] != 0;
  }
#endif
  return count;
}

}  // namespace diffmd
