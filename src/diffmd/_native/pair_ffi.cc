// XLA FFI handlers for the generated pair kernels (see pair_rows.h).
//
// Generated kernels are small shared libraries without XLA headers, one per part (forward, jvp,
// vjp: each compiled only when a run needs it); Python loads one and registers its functions
// here under the kernel's name (a hash of its source), and the handlers find them by that name, a string attribute of the custom call. A name rather than a
// pointer: an executable restored from a persistent compilation cache in another process still
// names the right kernel (Python registers it again before the call is traced), and an
// unregistered name is an error, never a stale pointer.
//
// Each handler checks shapes, splits the rows into chunks over XLA's intra-op thread pool
// (common.h) and adds up the chunks' sums in double precision.

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "pair_rows.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using diffmd::PairRowsArgs;
using diffmd::PairRowsFn;
using diffmd::PairRowsOut;

struct Kernel {
  int32_t dtype_bytes, dims, n_params, n_globals;
  PairRowsFn forward, jvp, jvp_uniform, vjp;
};

std::mutex registry_mutex;
std::unordered_map<std::string, Kernel>& Registry() {
  static auto* registry = new std::unordered_map<std::string, Kernel>();
  return *registry;
}

// The registered kernel `name`, if it has the given part (0 forward, 1 jvp, 2 vjp).
const Kernel* Find(std::string_view name, int part) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto it = Registry().find(std::string(name));
  if (it == Registry().end()) return nullptr;
  const Kernel& k = it->second;
  const bool has = part == 0 ? k.forward != nullptr : part == 1 ? (k.jvp != nullptr && k.jvp_uniform != nullptr)
                                                                 : k.vjp != nullptr;
  return has ? &k : nullptr;
}

template <ffi::DataType DT>
ffi::Error Check(const Kernel* kernel, std::string_view name, const ffi::Buffer<DT>& x, const ffi::Buffer<DT>& params,
                 const ffi::Buffer<DT>& globals, const ffi::Buffer<ffi::S32>& idx, const ffi::Buffer<DT>& sides) {
  if (kernel == nullptr)
    return ffi::Error::InvalidArgument("pair_rows: kernel '" + std::string(name) + "' (this part) is not registered");
  const auto xd = x.dimensions();
  const auto id = idx.dimensions();
  if (kernel->dtype_bytes != int32_t(sizeof(ffi::NativeType<DT>)) || xd.size() != 2 || xd[1] != kernel->dims)
    return ffi::Error::InvalidArgument("pair_rows: the kernel was generated for another dtype or dimension");
  if (id.size() != 2 || id[0] != xd[0] || sides.element_count() != xd[1] ||
      params.element_count() != kernel->n_params * xd[0] || globals.element_count() != kernel->n_globals)
    return ffi::Error::InvalidArgument("pair_rows: inconsistent shapes");
  return ffi::Error::Success();
}

template <ffi::DataType DT>
PairRowsArgs MakeArgs(const ffi::Buffer<DT>& x, const ffi::Buffer<DT>& params, const ffi::Buffer<DT>& globals,
                      const ffi::Buffer<ffi::S32>& idx, const ffi::Buffer<DT>& sides, int32_t periodic) {
  PairRowsArgs a{};
  a.n = x.dimensions()[0];
  a.k = idx.dimensions()[1];
  a.periodic = periodic;
  a.x = x.typed_data();
  a.params = params.typed_data();
  a.globals = globals.typed_data();
  a.idx = idx.typed_data();
  a.sides = sides.typed_data();
  return a;
}

template <ffi::DataType DT>
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<DT> x, ffi::Buffer<DT> params, ffi::Buffer<DT> globals,
                   ffi::Buffer<ffi::S32> idx, ffi::Buffer<DT> sides, ffi::ResultBuffer<DT> energy,
                   ffi::ResultBuffer<DT> forces, std::string_view kernel_name, int32_t periodic) {
  using T = ffi::NativeType<DT>;
  const Kernel* kernel = Find(kernel_name, 0);
  if (auto err = Check(kernel, kernel_name, x, params, globals, idx, sides); err.failure()) return err;
  const PairRowsArgs args = MakeArgs(x, params, globals, idx, sides, periodic);
  const int64_t chunks = diffmd::ChunksFor(pool, args.n * args.k);
  std::vector<double> partial(chunks, 0.0);
  diffmd::ParallelRows(pool, args.n, chunks, [&](int64_t c, int64_t begin, int64_t end) {
    PairRowsOut out{};
    out.forces = forces->typed_data();
    out.energy = &partial[c];
    kernel->forward(&args, &out, begin, end);
  });
  double total = 0;
  for (double v : partial) total += v;
  *energy->typed_data() = T(0.5 * total);
  return ffi::Error::Success();
}

template <typename T>
bool RowsUniform(const T* values, int64_t rows, int64_t n) {
  for (int64_t p = 0; p < rows; ++p)
    if (!std::all_of(values + p * n, values + (p + 1) * n, [&](T v) { return v == values[p * n]; })) return false;
  return true;
}

template <ffi::DataType DT>
ffi::Error Jvp(ffi::ThreadPool pool, ffi::Buffer<DT> x, ffi::Buffer<DT> params, ffi::Buffer<DT> globals,
               ffi::Buffer<ffi::S32> idx, ffi::Buffer<DT> sides, ffi::Buffer<DT> x_dot, ffi::Buffer<DT> params_dot,
               ffi::Buffer<DT> globals_dot, ffi::Buffer<DT> sides_dot, ffi::ResultBuffer<DT> energy,
               ffi::ResultBuffer<DT> forces, ffi::ResultBuffer<DT> energy_dot, ffi::ResultBuffer<DT> forces_dot,
               std::string_view kernel_name, int32_t periodic) {
  using T = ffi::NativeType<DT>;
  const Kernel* kernel = Find(kernel_name, 1);
  if (auto err = Check(kernel, kernel_name, x, params, globals, idx, sides); err.failure()) return err;
  PairRowsArgs args = MakeArgs(x, params, globals, idx, sides, periodic);
  args.x_dot = x_dot.typed_data();
  args.params_dot = params_dot.typed_data();
  args.globals_dot = globals_dot.typed_data();
  args.sides_dot = sides_dot.typed_data();
  // One global σ being differentiated (or none): the neighbors' tangents need no gathers.
  args.uniform_tangents = RowsUniform(params_dot.typed_data(), kernel->n_params, args.n);
  const PairRowsFn fn = args.uniform_tangents ? kernel->jvp_uniform : kernel->jvp;
  const int64_t chunks = diffmd::ChunksFor(pool, 2 * args.n * args.k);
  std::vector<double> pe(chunks, 0.0), pe_dot(chunks, 0.0);
  diffmd::ParallelRows(pool, args.n, chunks, [&](int64_t c, int64_t begin, int64_t end) {
    PairRowsOut out{};
    out.forces = forces->typed_data();
    out.forces_dot = forces_dot->typed_data();
    out.energy = &pe[c];
    out.energy_dot = &pe_dot[c];
    fn(&args, &out, begin, end);
  });
  double total = 0, total_dot = 0;
  for (int64_t c = 0; c < chunks; ++c) total += pe[c], total_dot += pe_dot[c];
  *energy->typed_data() = T(0.5 * total);
  *energy_dot->typed_data() = T(0.5 * total_dot);
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error Vjp(ffi::ThreadPool pool, ffi::Buffer<DT> x, ffi::Buffer<DT> params, ffi::Buffer<DT> globals,
               ffi::Buffer<ffi::S32> idx, ffi::Buffer<DT> sides, ffi::Buffer<DT> e_bar, ffi::Buffer<DT> f_bar,
               ffi::ResultBuffer<DT> x_bar, ffi::ResultBuffer<DT> params_bar, ffi::ResultBuffer<DT> globals_bar,
               ffi::ResultBuffer<DT> sides_bar, std::string_view kernel_name, int32_t periodic) {
  using T = ffi::NativeType<DT>;
  const Kernel* kernel = Find(kernel_name, 2);
  if (auto err = Check(kernel, kernel_name, x, params, globals, idx, sides); err.failure()) return err;
  PairRowsArgs args = MakeArgs(x, params, globals, idx, sides, periodic);
  args.e_bar = e_bar.typed_data();
  args.f_bar = f_bar.typed_data();
  const int64_t chunks = diffmd::ChunksFor(pool, 2 * args.n * args.k);
  const int64_t g = kernel->n_globals, dims = kernel->dims;
  std::vector<double> gb(chunks * std::max<int64_t>(g, 1), 0.0), box(chunks * 3, 0.0);
  diffmd::ParallelRows(pool, args.n, chunks, [&](int64_t c, int64_t begin, int64_t end) {
    PairRowsOut out{};
    out.x_bar = x_bar->typed_data();
    out.params_bar = params_bar->typed_data();
    out.globals_bar = &gb[c * std::max<int64_t>(g, 1)];
    out.sides_bar = &box[3 * c];
    kernel->vjp(&args, &out, begin, end);
  });
  for (int64_t p = 0; p < g; ++p) {
    double total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += gb[c * g + p];
    globals_bar->typed_data()[p] = T(total);
  }
  for (int64_t a = 0; a < dims; ++a) {
    double total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += box[3 * c + a];
    sides_bar->typed_data()[a] = T(total);
  }
  return ffi::Error::Success();
}

#define DIFFMD_ATTRS .Attr<std::string_view>("kernel").Attr<int32_t>("periodic")
#define DIFFMD_B(DT) ffi::Buffer<DT>
// Every handler starts with (thread pool, x, params, globals, idx, sides).
#define DIFFMD_BIND(DT)                                                                                  \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<DIFFMD_B(DT)>().Arg<DIFFMD_B(DT)>().Arg<DIFFMD_B(DT)>()    \
      .Arg<ffi::Buffer<ffi::S32>>().Arg<DIFFMD_B(DT)>()

#define DIFFMD_FORWARD(NAME, DT) \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, Forward<DT>, DIFFMD_BIND(DT).Ret<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>() DIFFMD_ATTRS)

#define DIFFMD_JVP(NAME, DT)                                                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, Jvp<DT>,                                                            \
                                DIFFMD_BIND(DT).Arg<DIFFMD_B(DT)>().Arg<DIFFMD_B(DT)>().Arg<DIFFMD_B(DT)>() \
                                    .Arg<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>()           \
                                    .Ret<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>() DIFFMD_ATTRS)

#define DIFFMD_VJP(NAME, DT)                                                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, Vjp<DT>,                                                            \
                                DIFFMD_BIND(DT).Arg<DIFFMD_B(DT)>().Arg<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>() \
                                    .Ret<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>().Ret<DIFFMD_B(DT)>() DIFFMD_ATTRS)

}  // namespace

DIFFMD_FORWARD(DiffmdPairForwardF32, ffi::F32);
DIFFMD_FORWARD(DiffmdPairForwardF64, ffi::F64);
DIFFMD_JVP(DiffmdPairJvpF32, ffi::F32);
DIFFMD_JVP(DiffmdPairJvpF64, ffi::F64);
DIFFMD_VJP(DiffmdPairVjpF32, ffi::F32);
DIFFMD_VJP(DiffmdPairVjpF64, ffi::F64);

// Called from Python (ctypes) after loading one part of a generated kernel (0 forward: fn; 1 jvp:
// fn, fn_uniform; 2 vjp: fn); returns 0, 1 for a bad entry, 2 if it contradicts a registered part.
extern "C" int diffmd_register_pair_kernel(const char* name, int32_t part, int32_t dtype_bytes, int32_t dims,
                                           int32_t n_params, int32_t n_globals, void* fn, void* fn_uniform) {
  if (name == nullptr || fn == nullptr || part < 0 || part > 2 || (part == 1 && fn_uniform == nullptr)) return 1;
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto [it, fresh] = Registry().try_emplace(name, Kernel{dtype_bytes, dims, n_params, n_globals, nullptr, nullptr,
                                                           nullptr, nullptr});
  Kernel& k = it->second;
  if (k.dtype_bytes != dtype_bytes || k.dims != dims || k.n_params != n_params || k.n_globals != n_globals) return 2;
  if (part == 0) k.forward = reinterpret_cast<PairRowsFn>(fn);
  if (part == 1) k.jvp = reinterpret_cast<PairRowsFn>(fn), k.jvp_uniform = reinterpret_cast<PairRowsFn>(fn_uniform);
  if (part == 2) k.vjp = reinterpret_cast<PairRowsFn>(fn);
  return 0;
}
