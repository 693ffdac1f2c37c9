// Neighbor rows from a cell grid, as an XLA FFI custom call: the compiled form of
// diffmd.neighbors' pure-JAX cell build (the reference the tests compare against), with the
// same rows in the same order.
//
// Atoms (coordinates wrapped into the box, their linear cell index computed in JAX) are
// counting-sorted by cell, in index order within a cell, and their coordinates copied in that
// order (a cell's atoms are then contiguous: distance checks are vector loads, not gathers). Row i lists, for each of the 3^D cells
// around atom i's cell (offsets −1, 0, 1 per axis, the last axis fastest) and each atom j ≠ i of
// that cell in index order, the atoms with |x_j + s·L − x_i|² < cutoff², s the cell's periodic
// image shift (−1, 0 or 1 box sides per axis), and j not an excluded partner of i. Rows are
// left-packed in `slots` entries and padded with N; an atom with more neighbors keeps the first
// `slots` and the returned count (the most neighbors of any atom) reports the overflow. Also
// returned: the most atoms in any cell. Unlike the pure-JAX build, a cell may hold any number of
// atoms here (the caller still flags a count above the cell capacity, the same way).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

// The same rounding as the pure-JAX build, so that both list the same pairs even at the cutoff.
#pragma STDC FP_CONTRACT OFF

namespace ffi = xla::ffi;

namespace {

template <ffi::DataType DT>
ffi::Error CellRows(ffi::ThreadPool pool, ffi::Buffer<DT> wrapped, ffi::Buffer<ffi::S32> cell_of,
                    ffi::Buffer<DT> sides, ffi::Buffer<ffi::S32> excluded, ffi::ResultBuffer<ffi::S32> idx,
                    ffi::ResultBuffer<ffi::S32> most_neighbors, ffi::ResultBuffer<ffi::S32> most_in_cell,
                    int64_t grid0, int64_t grid1, int64_t grid2, double cutoff) {
  using T = ffi::NativeType<DT>;
  const auto xd = wrapped.dimensions();
  const int64_t n = xd[0], dims = xd[1], slots = idx->dimensions()[1];
  const int64_t grid[3] = {grid0, grid1, dims == 3 ? grid2 : 1};
  const int64_t n_excluded = excluded.dimensions()[1];
  if ((dims != 2 && dims != 3) || cell_of.element_count() != n || sides.element_count() != dims ||
      excluded.dimensions()[0] < n || idx->dimensions()[0] != n)
    return ffi::Error::InvalidArgument("cell_rows: inconsistent shapes");
  for (int a = 0; a < dims; ++a)
    if (grid[a] < 3) return ffi::Error::InvalidArgument("cell_rows: the grid needs at least 3 cells per side");
  const int64_t n_cells = grid[0] * grid[1] * grid[2];
  const T* x = wrapped.typed_data();
  const int32_t* cell = cell_of.typed_data();
  const int32_t* table = excluded.typed_data();
  for (int64_t i = 0; i < n; ++i)
    if (cell[i] < 0 || cell[i] >= n_cells) return ffi::Error::InvalidArgument("cell_rows: cell index out of range");

  // counting sort: members of cell c are members[start[c] .. start[c + 1]), in index order
  std::vector<int32_t> start(n_cells + 1, 0), members(n);
  for (int64_t i = 0; i < n; ++i) ++start[cell[i] + 1];
  int32_t most = 0;
  for (int64_t c = 0; c < n_cells; ++c) most = std::max(most, start[c + 1]), start[c + 1] += start[c];
  {
    std::vector<int32_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) members[fill[cell[i]]++] = int32_t(i);
  }

  T side[3] = {T(0), T(0), T(0)};
  for (int a = 0; a < dims; ++a) side[a] = sides.typed_data()[a];
  // coordinates in cell order, one array per axis: a cell's atoms are contiguous, no gathers
  std::vector<T> sorted(3 * (n + 16), T(0));
  T* xs[3] = {sorted.data(), sorted.data() + (n + 16), sorted.data() + 2 * (n + 16)};
  for (int64_t k = 0; k < n; ++k)
    for (int a = 0; a < dims; ++a) xs[a][k] = x[members[k] * dims + a];
  const T cutoff2 = T(cutoff * cutoff);
  const int n_offsets = dims == 3 ? 27 : 9;
  int32_t* rows = idx->typed_data();

  const int64_t chunks = diffmd::ChunksFor(pool, n * n_offsets * (n / n_cells + 1));
  std::vector<int32_t> chunk_most(chunks, 0);
  diffmd::ParallelRows(pool, n, chunks, [&](int64_t chunk, int64_t begin, int64_t end) {
    std::vector<int32_t> keep(most + 16), found(n_offsets * int64_t(most) + 16);
    int32_t local_most = 0;
    for (int64_t i = begin; i < end; ++i) {
      int64_t c = cell[i];
      const int64_t ci[3] = {c / (grid[1] * grid[2]), (c / grid[2]) % grid[1], c % grid[2]};
      T xi[3] = {T(0), T(0), T(0)};
      for (int a = 0; a < dims; ++a) xi[a] = x[i * dims + a];
      int64_t count = 0;
      for (int o = 0; o < n_offsets; ++o) {
        // offsets in the order of numpy's meshgrid(..., indexing="ij"): the last axis fastest
        const int off[3] = {dims == 3 ? o / 9 - 1 : o / 3 - 1, dims == 3 ? (o / 3) % 3 - 1 : o % 3 - 1,
                            dims == 3 ? o % 3 - 1 : 0};
        int64_t nb[3];
        T shift[3] = {T(0), T(0), T(0)};
        for (int a = 0; a < 3; ++a) {
          const int64_t u = ci[a] + off[a];
          nb[a] = (u + grid[a]) % grid[a];
          shift[a] = T((u - nb[a]) / grid[a]) * side[a];  // −1, 0 or 1 box sides
        }
        const int64_t other = (nb[0] * grid[1] + nb[1]) * grid[2] + nb[2];
        const int32_t first = start[other], size = start[other + 1] - first;
        const T* x0 = xs[0] + first;
        const T* x1 = xs[1] + first;
        const T* x2 = xs[2] + first;
        const int32_t* ids = members.data() + first;
        int32_t* kept = keep.data();
#pragma omp simd
        for (int32_t k = 0; k < size; ++k) {
          const T d0 = (x0[k] + shift[0]) - xi[0], d1 = (x1[k] + shift[1]) - xi[1];
          const T d2 = dims == 3 ? (x2[k] + shift[2]) - xi[2] : T(0);
          T r2 = d0 * d0;
          r2 = r2 + d1 * d1;
          r2 = r2 + d2 * d2;
          kept[k] = (r2 < cutoff2) & (ids[k] != int32_t(i));
        }
        count += diffmd::AppendKept(ids, kept, size, found.data() + count);
      }
      const int32_t* partners = table + i * n_excluded;
      if (n_excluded > 0 && partners[0] >= 0) {  // drop excluded partners, keeping the order
        int64_t m = 0;
        for (int64_t s = 0; s < count; ++s) {
          bool is_excluded = false;
          for (int64_t e = 0; e < n_excluded; ++e) is_excluded |= partners[e] == found[s];
          found[m] = found[s];
          m += !is_excluded;
        }
        count = m;
      }
      int32_t* row = rows + i * slots;
      const int64_t listed = std::min<int64_t>(count, slots);
      std::copy(found.begin(), found.begin() + listed, row);
      std::fill(row + listed, row + slots, int32_t(n));
      local_most = std::max<int32_t>(local_most, int32_t(count));
    }
    chunk_most[chunk] = std::max(chunk_most[chunk], local_most);
  });
  int32_t neighbors = 0;
  for (int32_t m : chunk_most) neighbors = std::max(neighbors, m);
  *most_neighbors->typed_data() = neighbors;
  *most_in_cell->typed_data() = most;
  return ffi::Error::Success();
}

#define DIFFMD_CELL_ROWS(NAME, DT)                                                                         \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, CellRows<DT>,                                                       \
                                ffi::Ffi::Bind()                                                          \
                                    .Ctx<ffi::ThreadPool>()                                               \
                                    .Arg<ffi::Buffer<DT>>()                                               \
                                    .Arg<ffi::Buffer<ffi::S32>>()                                         \
                                    .Arg<ffi::Buffer<DT>>()                                               \
                                    .Arg<ffi::Buffer<ffi::S32>>()                                         \
                                    .Ret<ffi::Buffer<ffi::S32>>()                                         \
                                    .Ret<ffi::Buffer<ffi::S32>>()                                         \
                                    .Ret<ffi::Buffer<ffi::S32>>()                                         \
                                    .Attr<int64_t>("grid0")                                               \
                                    .Attr<int64_t>("grid1")                                               \
                                    .Attr<int64_t>("grid2")                                               \
                                    .Attr<double>("cutoff"))

}  // namespace

DIFFMD_CELL_ROWS(DiffmdCellRowsF32, ffi::F32);
DIFFMD_CELL_ROWS(DiffmdCellRowsF64, ffi::F64);
