"""C++ from a pair potential's traced energy: the source of a fused, compiled pair kernel.

A pair function (V, s)(u, θ_i, θ_j, g) — the energy of one pair at squared distance u = r² and
s = V'(r)/r = 2 dV/du, from the per-atom parameters θ of its two atoms and the parameters g
shared by all pairs, cutoffs applied — is traced by JAX into jaxprs: for (V, s), for their forward-mode derivative
and for their reverse-mode derivative; no derivative is written by hand. Each jaxpr is an
elementwise program on scalars; `emit` translates it equation by equation into C++ (exp, log,
pow, tanh… from `_native/vmath.h`, which vectorise), and `kernel_sources` wraps the three
programs into row loops over dense neighbor rows (`_native/pair_rows.h`): forward (E, F), jvp
(E, F, Ė, Ḟ) and vjp (x̄, θ̄, ḡ, L̄). This is OpenMM's idea for custom forces (Lepton compiles a
user's expression into the platform's kernel), with a JAX function in place of the string.

A program that uses a primitive without a translation (or a non-scalar value) raises
`Unsupported`, naming it; the caller then keeps the pure-JAX kernel.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

try:  # jax ≥ 0.4.36
    from jax.extend.core import Literal as _Literal
except ImportError:  # pragma: no cover
    from jax.core import Literal as _Literal


class Unsupported(Exception):
    """The traced pair function has something the C++ translation does not cover."""


_CTYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.bool_): "bool",
    np.dtype(np.int32): "int32_t",
    np.dtype(np.int64): "int64_t",
    np.dtype(np.uint32): "uint32_t",
    np.dtype(np.int8): "int8_t",
    np.dtype(np.uint8): "uint8_t",
    np.dtype(np.int16): "int16_t",
    np.dtype(np.uint16): "uint16_t",
    np.dtype(np.uint64): "uint64_t",
}

_UNARY = {
    "neg": "(-{0})",
    "abs": "vm::Fabs({0})",
    "sqrt": "vm::Sqrt({0})",
    "rsqrt": "({t}(1) / vm::Sqrt({0}))",
    "cbrt": "vm::Cbrt({0})",
    "exp": "vm::Exp({0})",
    "exp2": "vm::Exp({0} * {t}(0.6931471805599453))",
    "log": "vm::Log({0})",
    "log1p": "vm::Log1p({0})",
    "expm1": "vm::Expm1({0})",
    "tanh": "vm::Tanh({0})",
    "logistic": "vm::Logistic({0})",
    "sin": "vm::Sin({0})",
    "cos": "vm::Cos({0})",
    "tan": "vm::Tan({0})",
    "asin": "vm::Asin({0})",
    "acos": "vm::Acos({0})",
    "atan": "vm::Atan({0})",
    "sinh": "vm::Sinh({0})",
    "cosh": "vm::Cosh({0})",
    "asinh": "vm::Asinh({0})",
    "acosh": "vm::Acosh({0})",
    "atanh": "vm::Atanh({0})",
    "erf": "vm::Erf({0})",
    "erfc": "vm::Erfc({0})",
    "lgamma": "vm::Lgamma({0})",
    "floor": "vm::Floor({0})",
    "ceil": "vm::Ceil({0})",
    "square": "({0} * {0})",
    "one_minus_square": "({t}(1) - {0} * {0})",
    "sign": "{t}(({0} > {t}(0)) - ({0} < {t}(0)))",

    "is_finite": "vm::IsFinite({0})",
    "copy": "{0}",
    "copy_p": "{0}",
    "stop_gradient": "{0}",
    "real": "{0}",
    "optimization_barrier": "{0}",
}

_BINARY = {
    "add": "({0} + {1})",
    "add_any": "({0} + {1})",
    "sub": "({0} - {1})",
    "mul": "({0} * {1})",
    "rem": "vm::Fmod({0}, {1})",
    "pow": "vm::Pow({0}, {1})",
    "atan2": "vm::Atan2({0}, {1})",
    "nextafter": "vm::NextAfter({0}, {1})",
    # XLA's max/min propagate NaN (std::fmax would drop it)
    "max": "((({0} > {1}) | ({0} != {0})) ? {0} : {1})",
    "min": "((({0} < {1}) | ({0} != {0})) ? {0} : {1})",
    "lt": "({0} < {1})",
    "le": "({0} <= {1})",
    "gt": "({0} > {1})",
    "ge": "({0} >= {1})",
    "eq": "({0} == {1})",
    "ne": "({0} != {1})",
    "and": "({0} & {1})",  # logical for bools, bitwise for integers, as XLA
    "or": "({0} | {1})",
    "xor": "({0} ^ {1})",
}

# Primitives that call a sub-program: inline it.
_CALL_PARAMS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
                "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
                "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}


def _ctype(aval) -> str:
    dtype = np.dtype(aval.dtype)
    if dtype not in _CTYPES:
        raise Unsupported(f"values of dtype {dtype}")
    return _CTYPES[dtype]


def _literal(value, dtype) -> str:
    dtype = np.dtype(dtype)
    ctype = _CTYPES.get(dtype)
    if ctype is None:
        raise Unsupported(f"a constant of dtype {dtype}")
    value = np.asarray(value)
    if value.shape != ():
        raise Unsupported(f"a constant of shape {value.shape}")
    if dtype == np.bool_:
        return "true" if bool(value) else "false"
    if np.issubdtype(dtype, np.integer):
        return f"{ctype}({int(value)}{'ULL' if np.issubdtype(dtype, np.unsignedinteger) else 'LL'})"
    v = float(value.astype(dtype))
    if math.isnan(v):
        return f"vm::NaN<{ctype}>()"
    if math.isinf(v):
        return f"{'-' if v < 0 else ''}vm::Inf<{ctype}>()"
    return f"{ctype}({v!r})"


class _Emitter:
    """Translates scalar jaxprs into C++ statements (one `const` local per equation).

    `distance2`: the name of the program's input u = r², on every pair the kernel evaluates
    below `cutoff2`; a comparison r < c or u < c² with a constant c at or beyond the cutoff is
    then true and folded away, with the selects and derivative seeds of a term's own cutoff
    (a term whose cutoff is the kernel's pays nothing for it). At r = c exactly (u just below
    c² with √u rounded up to c) the pair then counts as inside, where the pure-JAX kernel puts
    it outside: which side a boundary pair falls is the evaluation's decision (see kKeep2).
    """

    def __init__(self, prefix: str, distance2: str | None = None, cutoff2: float = math.inf):
        self.lines: list[str] = []
        self.prefix = prefix
        self.count = 0
        self.reciprocals: dict[str, str] = {}
        self.selects: dict[str, tuple[str, str, str]] = {}  # name -> (predicate, if false, if true)
        self.distance2, self.cutoff2 = distance2, cutoff2
        self.distances: set[str] = set()  # names holding √u
        self.constants: dict[str, float] = {}  # literal text -> value
        self.defined: dict[tuple[str, str], str] = {}  # (type, expression) -> the local holding it

    def inside_cutoff(self, x: str, c: str) -> bool:
        """Whether x < c holds on every evaluated pair: x is u (or √u) and c a constant ≥ the
        cutoff² (or cutoff)."""
        if c not in self.constants or not math.isfinite(self.cutoff2):
            return False
        # c is in the kernel's dtype: a cutoff like 0.9 nm rounds down in float32
        reach = self.cutoff2 * (1.0 - 1e-6)
        if x == self.distance2:
            return self.constants[c] >= reach
        return x in self.distances and self.constants[c] ** 2 >= reach

    def reciprocal(self, y: str, ctype: str) -> str:
        """1/y, computed once per distinct y: a division costs ~20 multiplications in a vector
        loop, and derivatives divide by the same few values (r, σ/r…) again and again.
        x·(1/y) may differ from x/y in the last bit."""
        if y not in self.reciprocals:
            if y in self.selects:  # 1/(c ? a : b) = c ? 1/a : 1/b: a cutoff's r_in = (r < rc ? r : rc) shares 1/r
                pred, if_false, if_true = self.selects[y]
                self.reciprocals[y] = self.define(
                    ctype, f"({pred} ? {self.reciprocal(if_true, ctype)} : {self.reciprocal(if_false, ctype)})")
            else:
                self.reciprocals[y] = self.define(ctype, f"{ctype}(1) / {y}")
        return self.reciprocals[y]

    def fresh(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"

    def define(self, ctype: str, expr: str) -> str:
        """A local holding `expr`, or the one that already holds it: fused terms repeat work
        (each takes √u, each mixes σ), and 1/y is then shared across them too."""
        key = (ctype, expr)
        if key not in self.defined:
            self.defined[key] = self.fresh()
            self.lines.append(f"const {ctype} {self.defined[key]} = {expr};")
        return self.defined[key]

    def jaxpr(self, jaxpr, consts, inputs: list[str]) -> list[str]:
        env = {}

        def read(atom):
            if isinstance(atom, _Literal):
                text = _literal(atom.val, atom.aval.dtype)
                if np.issubdtype(np.dtype(atom.aval.dtype), np.floating):
                    self.constants[text] = float(np.asarray(atom.val))
                return text
            return env[atom]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = _literal(value, np.asarray(value).dtype)
        for var, name in zip(jaxpr.invars, inputs):
            env[var] = name
        for eqn in jaxpr.eqns:
            for var in list(eqn.invars) + list(eqn.outvars):
                if getattr(var.aval, "shape", ()) != ():
                    raise Unsupported(f"a non-scalar value (shape {var.aval.shape}) from '{eqn.primitive.name}'")
            outputs = self.equation(eqn, [read(v) for v in eqn.invars])
            for var, name in zip(eqn.outvars, outputs):
                env[var] = name
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, args: list[str]) -> list[str]:
        name = eqn.primitive.name
        params = eqn.params
        if name in _CALL_PARAMS:
            sub = params[_CALL_PARAMS[name]]
            if hasattr(sub, "jaxpr"):  # ClosedJaxpr
                return self.jaxpr(sub.jaxpr, sub.consts, args)
            return self.jaxpr(sub, [], args)
        out_aval = eqn.outvars[0].aval
        ctype = _ctype(out_aval)
        if name in ("lt", "le") and self.inside_cutoff(args[0], args[1]) or \
                name in ("gt", "ge") and self.inside_cutoff(args[1], args[0]):
            return ["true"]
        if name in _UNARY:
            result = self.define(ctype, _UNARY[name].format(args[0], t=ctype))
            if name == "sqrt" and args[0] == self.distance2:
                self.distances.add(result)
            return [result]
        if name in _BINARY:
            return [self.define(ctype, _BINARY[name].format(*args, t=ctype))]
        if name == "div":
            if ctype in ("float", "double"):
                return [self.define(ctype, f"({args[0]} * {self.reciprocal(args[1], ctype)})")]
            return [self.define(ctype, f"({args[0]} / {args[1]})")]
        if name == "not":
            return [self.define(ctype, f"(!{args[0]})" if ctype == "bool" else f"(~{args[0]})")]
        if name == "bitcast_convert_type":
            return [self.define(ctype, f"vm::BitCast<{ctype}>({args[0]})")]
        if name == "polynomial":  # Σ_k c_k x^k by Horner's rule
            x, coefficients = args[0], args[1:]
            expr = coefficients[-1]
            for c in reversed(coefficients[:-1]):
                expr = self.define(ctype, f"({expr} * {x} + {c})")
            return [self.define(ctype, expr)]
        if name == "integer_pow":
            return [self.integer_pow(args[0], int(params["y"]), ctype)]
        if name == "select_n":
            pred, cases = args[0], args[1:]
            if pred in ("true", "false") and len(cases) == 2:
                return [cases[1] if pred == "true" else cases[0]]
            if len(cases) == 2:
                name = self.define(ctype, f"({pred} ? {cases[1]} : {cases[0]})")
                self.selects[name] = (pred, cases[0], cases[1])
                return [name]
            expr = cases[-1]
            for k in range(len(cases) - 2, -1, -1):
                expr = f"({pred} == {k} ? {cases[k]} : {expr})"
            return [self.define(ctype, expr)]
        if name == "convert_element_type":
            return [self.define(ctype, f"static_cast<{ctype}>({args[0]})")]
        if name in ("broadcast_in_dim", "reshape", "squeeze", "expand_dims", "reduce_precision"):
            return [self.define(ctype, args[0])]
        if name.startswith("reduce_") and tuple(params.get("axes", (0,))) == ():  # over no axes (shard_map)
            return [self.define(ctype, args[0])]
        if name == "clamp":
            low, x, high = args
            return [self.define(ctype, f"vm::Fmin(vm::Fmax({x}, {low}), {high})")]
        if name == "round":
            method = int(getattr(params.get("rounding_method"), "value", params.get("rounding_method", 0)))
            expr = f"vm::NearbyInt({args[0]})" if method == 1 else f"vm::Round({args[0]})"
            return [self.define(ctype, expr)]
        raise Unsupported(f"the primitive '{name}'")

    def integer_pow(self, x: str, y: int, ctype: str) -> str:
        if y == 0:
            return self.define(ctype, f"{ctype}(1)")
        # x^−n = (1/x)^n: every negative power of x shares one division
        n, result, power = abs(y), None, (x if y > 0 else self.reciprocal(x, ctype))
        while True:  # binary exponentiation, each product a named local (CSE-friendly)
            if n & 1:
                result = power if result is None else self.define(ctype, f"{result} * {power}")
            n >>= 1
            if not n:
                break
            power = self.define(ctype, f"{power} * {power}")
        return result


def emit(closed_jaxpr, inputs: list[str], prefix: str, cutoff2: float = math.inf) -> tuple[list[str], list[str]]:
    """C++ statements computing a scalar jaxpr from named inputs: (lines, output expressions).
    With a finite `cutoff2`, inputs[0] is u = r² < cutoff2 (see `_Emitter`)."""
    emitter = _Emitter(prefix, inputs[0] if math.isfinite(cutoff2) else None, cutoff2)
    outputs = emitter.jaxpr(closed_jaxpr.jaxpr, closed_jaxpr.consts, inputs)
    return emitter.lines, outputs


# ---- the three programs of a pair function --------------------------------------------------


@dataclass(frozen=True)
class PairPrograms:
    """Jaxprs of a pair function with P per-atom parameters and G shared ones:

    value(u, θi…, θj…, g…) -> (V, s);  tangent(…, u̇, θ̇i…, θ̇j…, ġ…) -> (V, s, V̇, ṡ);
    cotangent(…, a, b) -> (s, ū, θ̄i…, ḡ…) with (ū, θ̄, ḡ) = a ∇V + b ∇s; u = r².
    """

    value: object
    tangent: object
    cotangent: object
    n_params: int
    n_globals: int


def trace_programs(vs: Callable, n_params: int, n_globals: int, dtype) -> PairPrograms:
    """Trace the value, tangent and cotangent programs of a pair function
    vs(u, θi, θj, g) -> (V, s) of u = r² (θ and g tuples) for scalars of `dtype`."""

    def fn(u, *flat):
        return vs(u, flat[:n_params], flat[n_params:2 * n_params], flat[2 * n_params:])

    n_in = 1 + 2 * n_params + n_globals
    scalar = jax.ShapeDtypeStruct((), dtype)

    def tangent(*args):
        primals, tangents = args[:n_in], args[n_in:]
        (v, s), (v_dot, s_dot) = jax.jvp(fn, primals, tangents)
        return v, s, v_dot, s_dot

    def cotangent(*args):
        primals, (a, b) = args[:n_in], args[n_in:]
        (v, s), pullback = jax.vjp(fn, *primals)
        bars = pullback((a, b))
        u_bar, pi_bar, g_bar = bars[0], bars[1:1 + n_params], bars[1 + 2 * n_params:]
        return (s, u_bar, *pi_bar, *g_bar)

    with jax.ensure_compile_time_eval():
        value = jax.make_jaxpr(fn)(*[scalar] * n_in)
        tangent_jaxpr = jax.make_jaxpr(tangent)(*[scalar] * (2 * n_in))
        cotangent_jaxpr = jax.make_jaxpr(cotangent)(*[scalar] * (n_in + 2))
    return PairPrograms(value, tangent_jaxpr, cotangent_jaxpr, n_params, n_globals)


# ---- the kernel source ----------------------------------------------------------------------


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


def _block(lines: list[str], indent: str) -> str:
    return "\n".join(indent + line for line in lines)


def kernel_sources(programs: PairPrograms, dtype, dims: int, cutoff: float) -> tuple[str, dict[str, str]]:
    """(kernel name, {part: C++ source}) of the row kernels of a pair function, one source per
    part ("forward", "jvp", "vjp": each compiled only when a run needs it).

    `cutoff`: pairs at r ≥ cutoff contribute nothing (the largest cutoff of the fused terms;
    inf for none); each term's own cutoff is part of the traced energy.
    """
    ctype = _CTYPES[np.dtype(dtype)]
    p, g = programs.n_params, programs.n_globals
    pi, pj, gl = _names("pi", p), _names("pj", p), _names("g", g)
    pid, pjd, gd = _names("pid", p), _names("pjd", p), _names("gd", g)
    c2 = cutoff * cutoff
    value_lines, (v_out, s_out) = emit(programs.value, ["us", *pi, *pj, *gl], "a", c2)
    tangent_lines, tangent_out = emit(programs.tangent, ["us", *pi, *pj, *gl, "ud", *pid, *pjd, *gd], "b", c2)
    cot_lines, cot_out = emit(programs.cotangent, ["us", *pi, *pj, *gl, "e_bar", "mu_d"], "c", c2)
    cutoff2 = _literal(cutoff * cutoff if math.isfinite(cutoff) else math.inf, dtype)
    comps = range(dims)
    compact = bool(_TRANSCENDENTAL.search("\n".join(value_lines)))
    subs = {
        "@T@": ctype,
        "@D@": str(dims),
        "@P@": str(p),
        "@G@": str(g),
        "@CUTOFF2@": cutoff2,
        "@LOAD_GLOBALS@": " ".join(f"const T g{k} = glb[{k}];" for k in range(g)),
        "@LOAD_GLOBALS_DOT@": " ".join(f"const T gd{k} = glbd[{k}];" for k in range(g)),
        "@LOAD_PI@": " ".join(f"const T pi{k} = prm[{k} * n + i];" for k in range(p)),
        "@LOAD_PID@": " ".join(f"const T pid{k} = prmd[{k} * n + i];" for k in range(p)),
        "@LOAD_PJ@": " ".join(f"const T pj{k} = prm[{k} * n + j];" for k in range(p)),
        "@LOAD_PJD@": " ".join(f"const T pjd{k} = kUniform ? pid{k} : prmd[{k} * n + j];" for k in range(p)),
        "@VALUE@": _block(value_lines, "        ") + f"\n        V = {v_out}; sc = {s_out};",
        "@TANGENT@": _block(tangent_lines, "        ") + "\n        " + " ".join(
            f"{name} = {expr};" for name, expr in zip(("V", "sc", "Vd", "scd"), tangent_out)),
        "@COTANGENT@": _block(cot_lines, "        ") + "\n        " + " ".join(
            f"{name} = {expr};" for name, expr in zip(["sc", "ub", *_names("pb_", p), *_names("gb_", g)], cot_out)),
        "@PB_DECL@": " ".join(f"T pb{k} = 0;" for k in range(p)),
        "@GB_DECL@": " ".join(f"T gb{k} = 0;" for k in range(g)),
        "@PB_SLOT_DECL@": " ".join(f"T pb_{k};" for k in range(p)),
        "@GB_SLOT_DECL@": " ".join(f"T gb_{k};" for k in range(g)),
        "@PB_ACC@": " ".join(f"pb{k} += on ? pb_{k} : T(0);" for k in range(p)),
        "@GB_ACC@": " ".join(f"gb{k} += on ? gb_{k} : T(0);" for k in range(g)),
        "@PB_STORE@": " ".join(f"pbar[{k} * n + i] = pb{k};" for k in range(p)),
        "@GB_STORE@": " ".join(f"gsum[{k}] += double(gb{k});" for k in range(g)),
        "@RED_PB@": "".join(f", pb{k}" for k in range(p)),
        "@RED_GB@": "".join(f", gb{k}" for k in range(g)),
        "@XI@": " ".join(f"xi[{a}] = x[i * D + {a}];" for a in comps),
        "@COMPACT@": "true" if compact else "false",
        "@FORWARD_GEOMETRY@": "DIFFMD_KEPT_GEOMETRY(false)" if compact else "DIFFMD_GEOMETRY",
    }
    sources = {part: _PRELUDE + body for part, body in _PARTS.items()}
    for key, value in subs.items():
        sources = {part: text.replace(key, value) for part, text in sources.items()}
    name = "diffmd_pair_" + hashlib.sha256("".join(sources.values()).encode()).hexdigest()[:20]
    return name, {part: text.replace("@NAME@", name) for part, text in sources.items()}


# Calls that make a pair expensive enough for the forward kernel to skip the slots beyond the cutoff
_TRANSCENDENTAL = re.compile(r"vm::(Exp|Expm1|Log|Log1p|Pow|Erf|Erfc|Tanh|Logistic|Sin|Cos|Tan|Asin|Acos|Atan|Atan2|"
                             r"Sinh|Cosh|Asinh|Acosh|Atanh|Lgamma|Cbrt)\(")


_PRELUDE = r"""// Generated by diffmd.kernels.codegen: a fused pair kernel over dense neighbor rows.
#include <cstdint>

#include "pair_rows.h"

namespace {

namespace vm = diffmd::vmath;
using T = @T@;
constexpr int D = @D@;
constexpr T kCutoff2 = @CUTOFF2@;
// Pairs a few ulps beyond the cutoff are kept by the compaction: which side of it a pair falls
// is the evaluation's decision (its u may be rounded differently).
constexpr T kKeep2 = kCutoff2 * (T(1) + T(16) * vm::Epsilon<T>());

struct Box {
  T side[D], inv_side[D];
  Box(const diffmd::PairRowsArgs& a) {
    const T* sides = static_cast<const T*>(a.sides);
    for (int c = 0; c < D; ++c) {
      side[c] = a.periodic ? sides[c] : T(0);  // an open box: no image shift
      inv_side[c] = a.periodic ? T(1) / sides[c] : T(0);
    }
  }
};

// Minimum-image d = x_j − x_i, its image shift and u = |d|² (us: u where the pair is on, else a
// harmless 1; the programs take a square root only if the potential needs r).
#define DIFFMD_GEOMETRY                                                   \
  T d[D], im[D];                                                          \
  T u = 0;                                                                \
  for (int c = 0; c < D; ++c) {                                           \
    const T raw = x[j * D + c] - xi[c];                                   \
    im[c] = vm::NearbyInt(raw * box.inv_side[c]);                        \
    d[c] = raw - box.side[c] * im[c];                                     \
    u += d[c] * d[c];                                                     \
  }                                                                       \
  const bool on = (u > T(0)) & (u < kCutoff2);                            \
  const T us = on ? u : T(1);

// The same for slot s of a row compacted by NearSlots, which stored d (and, with SHIFT, the image
// shifts) contiguously: no gather of x_j.
#define DIFFMD_KEPT_GEOMETRY(SHIFT)                                       \
  T d[D], im[D];                                                          \
  T u = 0;                                                                \
  for (int c = 0; c < D; ++c) {                                           \
    d[c] = scratch.d[c][s];                                               \
    im[c] = SHIFT ? scratch.im[c][s] : T(0);                              \
    u += d[c] * d[c];                                                     \
  }                                                                       \
  const bool on = (u > T(0)) & (u < kCutoff2);                            \
  const T us = on ? u : T(1);

"""

_PARTS = {
    "forward": r"""void Forward(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(a->x);
  const T* prm = static_cast<const T*>(a->params);
  const T* glb = static_cast<const T*>(a->globals);
  const int64_t n = a->n, k = a->k;
  const Box box(*a);
  @LOAD_GLOBALS@
  T* forces = static_cast<T*>(o->forces);
  // kCompact: evaluate only the slots within the cutoff (a first pass of 3 gathers). It pays
  // where a pair costs transcendental functions; for LJ the extra pass costs more than it saves.
  constexpr bool kCompact = @COMPACT@;
  diffmd::RowScratch<T, D> scratch(kCompact ? k : 0);
  double e_sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    T xi[D];
    @XI@
    @LOAD_PI@
    const int32_t* row = a->idx + i * k;
    const int64_t count = kCompact ? 0 : diffmd::RowLength(row, k, n);
    const int64_t slots = kCompact ? diffmd::NearSlots<T, D, false>(x, box.side, box.inv_side, kKeep2, n, k, xi, i, row, scratch)
                                   : (count + 15) & ~int64_t(15);
    const int32_t* near = scratch.j;
    T f0 = 0, f1 = 0, f2 = 0, e_row = 0;
#pragma omp simd reduction(+ : f0, f1, f2, e_row)
    for (int64_t s = 0; s < slots; ++s) {
      const int32_t j_raw = kCompact ? near[s] : s < count ? row[s] : int32_t(n);  // whole vectors, no scalar tail
      const int32_t j = j_raw < n ? j_raw : int32_t(i);        // padding: a zero vector, masked
      @FORWARD_GEOMETRY@
      @LOAD_PJ@
      T V, sc;
      {
@VALUE@
      }
      const T nan_if_nan = T(0) * u;  // a NaN distance must not hide in the energy
      V = (on ? V : T(0)) + nan_if_nan;
      sc = on ? sc : T(0);
      f0 += sc * d[0];
      f1 += sc * d[1];
      if (D == 3) f2 += sc * d[D - 1];
      e_row += V;
    }
    forces[i * D] = f0;
    forces[i * D + 1] = f1;
    if (D == 3) forces[i * D + D - 1] = f2;
    e_sum += double(e_row);
  }
  *o->energy = e_sum;
}

}  // namespace

extern "C" {
void @NAME@_forward(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t b, int64_t e) {
  Forward(a, o, b, e);
}
}
""",
    "jvp": r"""template <bool kUniform>
void Jvp(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(a->x);
  const T* prm = static_cast<const T*>(a->params);
  const T* glb = static_cast<const T*>(a->globals);
  const T* x_dot = static_cast<const T*>(a->x_dot);
  const T* prmd = static_cast<const T*>(a->params_dot);
  const T* glbd = static_cast<const T*>(a->globals_dot);
  const T* sides_dot = static_cast<const T*>(a->sides_dot);
  const int64_t n = a->n, k = a->k;
  const Box box(*a);
  @LOAD_GLOBALS@
  @LOAD_GLOBALS_DOT@
  T side_dot[D];
  for (int c = 0; c < D; ++c) side_dot[c] = a->periodic ? sides_dot[c] : T(0);
  T* forces = static_cast<T*>(o->forces);
  T* forces_dot = static_cast<T*>(o->forces_dot);
  diffmd::RowScratch<T, D> scratch(k);
  double e_sum = 0, e_dot_sum = 0;
  for (int64_t i = begin; i < end; ++i) {
    T xi[D], xdi[D];
    @XI@
    for (int c = 0; c < D; ++c) xdi[c] = x_dot[i * D + c];
    @LOAD_PI@
    @LOAD_PID@
    const int64_t slots = diffmd::NearSlots<T, D, true>(x, box.side, box.inv_side, kKeep2, n, k, xi, i, a->idx + i * k, scratch);
    const int32_t* near = scratch.j;
    T f0 = 0, f1 = 0, f2 = 0, h0 = 0, h1 = 0, h2 = 0, e_row = 0, e_dot_row = 0;
#pragma omp simd reduction(+ : f0, f1, f2, h0, h1, h2, e_row, e_dot_row)
    for (int64_t s = 0; s < slots; ++s) {
      const int32_t j_raw = near[s];
      const int32_t j = j_raw < n ? j_raw : int32_t(i);
      DIFFMD_KEPT_GEOMETRY(true)
      T dd[D];
      T d_dd = 0;
      for (int c = 0; c < D; ++c) {
        dd[c] = x_dot[j * D + c] - xdi[c] - im[c] * side_dot[c];
        d_dd += d[c] * dd[c];
      }
      const T ud = on ? T(2) * d_dd : T(0);  // u̇ = 2 d·ḋ
      @LOAD_PJ@
      @LOAD_PJD@
      T V, sc, Vd, scd;
      {
@TANGENT@
      }
      const T nan_if_nan = T(0) * u;
      V = (on ? V : T(0)) + nan_if_nan;
      sc = on ? sc : T(0);
      Vd = on ? Vd : T(0);
      scd = on ? scd : T(0);
      f0 += sc * d[0];
      f1 += sc * d[1];
      h0 += scd * d[0] + sc * dd[0];
      h1 += scd * d[1] + sc * dd[1];
      if (D == 3) {
        f2 += sc * d[D - 1];
        h2 += scd * d[D - 1] + sc * dd[D - 1];
      }
      e_row += V;
      e_dot_row += Vd;
    }
    forces[i * D] = f0, forces[i * D + 1] = f1;
    forces_dot[i * D] = h0, forces_dot[i * D + 1] = h1;
    if (D == 3) forces[i * D + D - 1] = f2, forces_dot[i * D + D - 1] = h2;
    e_sum += double(e_row);
    e_dot_sum += double(e_dot_row);
  }
  *o->energy = e_sum;
  *o->energy_dot = e_dot_sum;
}

}  // namespace

extern "C" {
void @NAME@_jvp(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t b, int64_t e) {
  Jvp<false>(a, o, b, e);
}
void @NAME@_jvp_uniform(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t b, int64_t e) {
  Jvp<true>(a, o, b, e);
}
}
""",
    "vjp": r"""void Vjp(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(a->x);
  const T* prm = static_cast<const T*>(a->params);
  const T* glb = static_cast<const T*>(a->globals);
  const T* f_bar = static_cast<const T*>(a->f_bar);
  const T e_bar = *static_cast<const T*>(a->e_bar);
  const int64_t n = a->n, k = a->k;
  const Box box(*a);
  @LOAD_GLOBALS@
  T* x_bar = static_cast<T*>(o->x_bar);
  T* pbar = static_cast<T*>(o->params_bar);
  double* gsum = o->globals_bar;
  double box_sum[3] = {0, 0, 0};
  for (int c = 0; c < @G@; ++c) gsum[c] = 0;
  diffmd::RowScratch<T, D> scratch(k);
  for (int64_t i = begin; i < end; ++i) {
    T xi[D], lam[D];
    @XI@
    for (int c = 0; c < D; ++c) lam[c] = f_bar[i * D + c];
    @LOAD_PI@
    const int64_t slots = diffmd::NearSlots<T, D, true>(x, box.side, box.inv_side, kKeep2, n, k, xi, i, a->idx + i * k, scratch);
    const int32_t* near = scratch.j;
    T x0 = 0, x1 = 0, x2 = 0, b0 = 0, b1 = 0, b2 = 0;
    @PB_DECL@
    @GB_DECL@
#pragma omp simd reduction(+ : x0, x1, x2, b0, b1, b2 @RED_PB@ @RED_GB@)
    for (int64_t s = 0; s < slots; ++s) {
      const int32_t j_raw = near[s];
      const int32_t j = j_raw < n ? j_raw : int32_t(i);
      DIFFMD_KEPT_GEOMETRY(true)
      T mu[D];
      T mu_d = 0;
      for (int c = 0; c < D; ++c) {
        mu[c] = lam[c] - f_bar[j * D + c];
        mu_d += mu[c] * d[c];
      }
      @LOAD_PJ@
      T sc, ub;
      @PB_SLOT_DECL@
      @GB_SLOT_DECL@
      {
@COTANGENT@
      }
      sc = on ? sc : T(0);
      const T radial = on ? T(2) * ub : T(0);
      // ∂ℒ/∂d with ℒ = Ē·V + (μ·d)·s: s μ + 2ū d
      const T g0 = sc * mu[0] + radial * d[0];
      const T g1 = sc * mu[1] + radial * d[1];
      x0 -= g0, x1 -= g1;
      b0 -= g0 * im[0], b1 -= g1 * im[1];
      if (D == 3) {
        const T g2 = sc * mu[D - 1] + radial * d[D - 1];
        x2 -= g2;
        b2 -= g2 * im[D - 1];
      }
      @PB_ACC@
      @GB_ACC@
    }
    x_bar[i * D] = x0, x_bar[i * D + 1] = x1;
    if (D == 3) x_bar[i * D + D - 1] = x2;
    box_sum[0] += double(b0), box_sum[1] += double(b1), box_sum[2] += double(b2);
    @PB_STORE@
    @GB_STORE@
  }
  for (int c = 0; c < D; ++c) o->sides_bar[c] = box_sum[c];
}

}  // namespace

extern "C" {
void @NAME@_vjp(const diffmd::PairRowsArgs* a, const diffmd::PairRowsOut* o, int64_t b, int64_t e) {
  Vjp(a, o, b, e);
}
}
""",
}
