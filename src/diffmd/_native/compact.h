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

// In-place compaction of 16 slots at a time (NearSlots): the lanes of a 16-entry block whose
// keep flag is set, as a 16-bit mask, and the kept lanes of a block stored in order at out
// (which may be the block itself or any place before it; 16 entries are stored).
inline unsigned KeptMask(const int* keep) {
#if defined(__AVX512F__)
  CompactVector kept;
  __builtin_memcpy(&kept, keep, sizeof(kept));
  return __builtin_ia32_cmpd512_mask(kept, CompactVector{}, 4 /* not equal */, 0xFFFF);
#else
  unsigned mask = 0;
  for (int s = 0; s < 16; ++s) mask |= unsigned(keep[s] != 0) << s;
  return mask;
#endif
}

template <typename V>
inline void CompressStore(const V* in, unsigned mask, V* out) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 4) {
    CompactVector lanes;
    __builtin_memcpy(&lanes, in, sizeof(lanes));
    const CompactVector packed = __builtin_ia32_compresssi512_mask(lanes, CompactVector{}, (unsigned short)mask);
    __builtin_memcpy(out, &packed, sizeof(packed));
  } else {
    typedef long long Wide __attribute__((vector_size(64)));
    Wide low, high;
    __builtin_memcpy(&low, in, sizeof(low));
    __builtin_memcpy(&high, in + 8, sizeof(high));
    const Wide packed_low = __builtin_ia32_compressdi512_mask(low, Wide{}, (unsigned char)(mask & 0xFF));
    const Wide packed_high = __builtin_ia32_compressdi512_mask(high, Wide{}, (unsigned char)(mask >> 8));
    __builtin_memcpy(out, &packed_low, sizeof(packed_low));
    __builtin_memcpy(out + __builtin_popcount(mask & 0xFF), &packed_high, sizeof(packed_high));
  }
#else
  V block[16];
  for (int s = 0; s < 16; ++s) block[s] = in[s];  // `out` may overlap `in`
  int count = 0;
  for (int s = 0; s < 16; ++s) {  // branch-free
    out[count] = block[s];
    count += (mask >> s) & 1;
  }
#endif
}

}  // namespace diffmd
