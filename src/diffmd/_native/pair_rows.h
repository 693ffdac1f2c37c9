// What the generated pair kernels and the FFI handlers that call them share (no XLA here, so a
// generated kernel compiles in about a second).
//
// A generated kernel evaluates one fused pair function over dense neighbor rows: row i of idx
// (N, K) lists the neighbors of atom i, padded with N; every pair is in both rows, so the energy
// is half the sum over rows and the force on atom i is the row sum of s·d, d = x_j − x_i
// (minimum image), s = V'(r)/r. It exports three functions of the PairRowsFn type over a range
// of rows: forward (E, F), jvp (E, F, Ė, Ḟ) and vjp (x̄, θ̄, ḡ, L̄ from Ē, F̄); the FFI handlers
// (pair_ffi.cc) split rows into chunks over XLA's thread pool and call them per chunk.
#pragma once

#include <cstdint>

#include "compact.h"
#include "vmath.h"

namespace diffmd {

// Inputs of a call (pointers to the FFI buffers; T is the kernel's float type).
struct PairRowsArgs {
  int64_t n, k;                 // atoms, slots per row
  int32_t periodic;             // rectangular periodic box (else open)
  int32_t uniform_tangents;     // jvp: every atom has the same tangent of each parameter
  const void* x;                // (N, D)
  const void* params;           // (P, N) per-atom parameters
  const void* globals;          // (G,) parameters shared by all pairs
  const int32_t* idx;           // (N, K)
  const void* sides;            // (D,)
  const void* x_dot;            // jvp tangents: (N, D), (P, N), (G,), (D,)
  const void* params_dot;
  const void* globals_dot;
  const void* sides_dot;
  const void* e_bar;            // vjp cotangents: scalar, (N, D)
  const void* f_bar;
};

// Outputs of one chunk of rows [begin, end): row outputs are written at their rows, sums go
// to the chunk's own slots (added up by the caller).
struct PairRowsOut {
  void* forces;                 // (N, D)
  void* forces_dot;             // (N, D)
  void* x_bar;                  // (N, D)
  void* params_bar;             // (P, N): each row's own atom's cotangent
  double* energy;               // 1
  double* energy_dot;           // 1
  double* globals_bar;          // G
  double* sides_bar;            // D
};

using PairRowsFn = void (*)(const PairRowsArgs*, const PairRowsOut*, int64_t begin, int64_t end);

// Slots up to the last real neighbor: builders pack rows to the left, so trailing padding
// (index N) is skipped; padding elsewhere is masked like any other slot. The padding is scanned
// 16 slots at a time (a scalar scan with a data-dependent branch cost a tenth of a compacting
// kernel's first pass).
inline int64_t RowLength(const int32_t* row, int64_t k, int64_t n) {
  while (k >= 16) {
    int32_t padded = 1;
    for (int s = 0; s < 16; ++s) padded &= row[k - 16 + s] >= n;
    if (!padded) break;
    k -= 16;
  }
  while (k > 0 && row[k - 1] >= n) --k;
  return k;
}

// Scratch for one row's slots (one per chunk of rows; malloc'd, not a std::vector: the
// generated kernels include no standard header but <cstdint>): neighbor ids, keep flags, and the
// minimum-image d = x_j − x_i and image shifts of each slot, compacted in place by NearSlots.
template <typename T, int D>
struct RowScratch {
  int32_t *j, *keep;
  T *d[D], *im[D];
  explicit RowScratch(int64_t k) {
    const int64_t room = k + 32;  // whole vectors are stored beyond the last slot
    char* block = static_cast<char*>(__builtin_malloc((2 * sizeof(int32_t) + 2 * D * sizeof(T)) * room));
    j = reinterpret_cast<int32_t*>(block);
    keep = j + room;
    T* rest = reinterpret_cast<T*>(keep + room);
    for (int c = 0; c < D; ++c) d[c] = rest + c * room, im[c] = rest + (D + c) * room;
  }
  ~RowScratch() { __builtin_free(j); }
  RowScratch(const RowScratch&) = delete;
  RowScratch& operator=(const RowScratch&) = delete;
};

// The slots of row i that can contribute (u = r² < keep_u2, u ≠ 0; NaN kept), compacted: their
// neighbor ids into scratch.j, their d (and with kShift their image shifts) into scratch.d
// (scratch.im), padded with id N and d = 0 to a multiple of 16; returns the padded count. The
// evaluation loop then reads d contiguously instead of gathering x_j a second time. A list with
// a skin holds ~75 % more slots than pairs within the cutoff; the derivative kernels, which
// gather twice as much per slot as the forward kernel, evaluate only the kept ones, and so does
// the forward kernel of a pair function with transcendental calls (codegen's kCompact).
template <typename T, int D, bool kShift>
inline int64_t NearSlots(const T* x, const T* side, const T* inv_side, T keep_u2, int64_t n, int64_t k,
                         const T* xi, int64_t i, const int32_t* row, RowScratch<T, D>& scratch) {
  const int64_t count = RowLength(row, k, n), slots = (count + 15) & ~int64_t(15);
  int32_t* js = scratch.j;
  int32_t* keep = scratch.keep;
#pragma omp simd
  for (int64_t s = 0; s < slots; ++s) {
    const int32_t j_raw = s < count ? row[s] : int32_t(n);
    const int32_t j = j_raw < n ? j_raw : int32_t(i);
    T u = 0;
    for (int a = 0; a < D; ++a) {
      const T raw = x[j * D + a] - xi[a];
      const T im = vmath::NearbyInt(raw * inv_side[a]);
      const T d = raw - side[a] * im;
      scratch.d[a][s] = d;
      if (kShift) scratch.im[a][s] = im;
      u += d * d;
    }
    js[s] = j_raw;
    keep[s] = (u != T(0)) & !(u >= keep_u2);
  }
  int64_t m = 0;
  for (int64_t s = 0; s < slots; s += 16) {
    const unsigned mask = KeptMask(keep + s);
    CompressStore(js + s, mask, js + m);
    for (int a = 0; a < D; ++a) {
      CompressStore(scratch.d[a] + s, mask, scratch.d[a] + m);
      if (kShift) CompressStore(scratch.im[a] + s, mask, scratch.im[a] + m);
    }
    m += __builtin_popcount(mask);
  }
  const int64_t padded = (m + 15) & ~int64_t(15);
  for (int64_t s = m; s < padded; ++s) {
    js[s] = int32_t(n);
    for (int a = 0; a < D; ++a) {
      scratch.d[a][s] = T(0);
      if (kShift) scratch.im[a][s] = T(0);
    }
  }
  return padded;
}

}  // namespace diffmd
