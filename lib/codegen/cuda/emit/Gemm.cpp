//===- Gemm.cpp - CUDA emitters of the gemm kernels -------------------------===//
//
// kernel.gemm as a shared-memory tiled SIMT GEMM: 256 threads (16 x 16) per block, each
// computing a TM x TN micro-tile of a (16 TM) x (16 TN) block tile, K in tiles of BK held in
// shared memory (double-buffered, the next tile prefetched into registers while the current
// one is multiplied), 16-byte vector loads where the layout and the pointers allow, and plain
// fma (float32 accumulation for f32, float64 for f64: the exact path, no tensor cores).
//
// Semantics (runtime/Executor.cpp): result = op(A) op(B) [+ acc], then column c times
// mask[c / mask_block]. A prefix-dense extent over M, N or K (`*_extent`, in `*_groups`
// groups of entries, each entry covering dim / entries consecutive indices) keeps, in every
// group, the first `active * block` indices (`active` counted in the first group, passed at
// run time); only active K enters the product, and result entries outside active M x N are 0
// (acc's value with acc). Tiles without an active row or column skip the K loop.
//
// When the block tiles alone cannot fill the GPU and K is long, K is split over gridDim.z:
// each slice writes its partial tile to a scratch buffer and a second launch sums the slices
// in a fixed order (deterministic, no atomics) and applies acc and the mask.
//
// Test hooks (discardable attributes, not part of the op): `cuda.gemm_tile = "BMxBN"` forces
// a block tile (16x64, 16x128, 64x64, 128x64, 128x128) and `cuda.gemm_split = S : i64` the
// number of K slices.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

constexpr int64_t kThreads = 256;    // 16 x 16 threads per block
constexpr int64_t kWaveBlocks = 264; // two blocks per SM on a 132-SM H100/H200

/// One GEMM dimension and its optional prefix-dense extent mask.
struct Dim {
  char name = 'm';
  int64_t size = 0;
  bool masked = false;
  unsigned operand = 0; // the mask's operand number
  int64_t entries = 0, groups = 1, per = 0, block = 1, stride = 0;

  static Dim of(char name, int64_t size, Value mask, unsigned operand, int64_t groups) {
    Dim d;
    d.name = name;
    d.size = size;
    d.stride = size;
    if (!mask)
      return d;
    d.masked = true;
    d.operand = operand;
    d.entries = numElements(mask) - 2;
    d.groups = groups;
    d.per = d.entries / groups;
    d.block = size / d.entries;
    d.stride = d.per * d.block;
    return d;
  }
  std::string upper() const { return std::string(1, char(name - 'a' + 'A')); }
  /// The run-time argument: active entries per group.
  std::string arg() const { return std::string(1, name) + "_active"; }
  /// Active length of every run, in indices.
  std::string len() const { return std::string(1, name) + "Len"; }
  /// Whether index `i` lies in an active run.
  std::string on(const std::string &i) const {
    if (!masked)
      return "true";
    if (groups == 1)
      return "(" + i + " < " + len() + ")";
    return "(" + i + " % k" + upper() + "Stride < " + len() + ")";
  }
  void constants(llvm::raw_ostream &os) const {
    if (!masked)
      return;
    os << "// " << name << "_extent: " << entries << " entries in " << groups << " groups, "
       << block << " consecutive indices per entry\n";
    os << "constexpr long long k" << upper() << "Per = " << per << ", k" << upper()
       << "Block = " << block << ", k" << upper() << "Stride = " << stride << ";\n";
  }
  /// Declares len() from the clamped run-time argument.
  void declareLen(llvm::raw_ostream &os) const {
    if (!masked)
      return;
    os << "  const long long " << len() << " = clampExtent(" << arg() << ", k" << upper()
       << "Per) * k" << upper() << "Block;\n";
  }
  /// Whether [lo, hi) holds an active index (block-uniform).
  std::string any(const std::string &lo, const std::string &hi) const {
    if (!masked)
      return "true";
    return "anyActive(" + lo + ", " + hi + ", k" + upper() + "Stride, " + len() + ")";
  }
};

/// Block tile: 16 tm rows x 16 tn columns, K in tiles of bk; split K slices.
struct Config {
  int64_t tm = 4, tn = 4, bk = 16, split = 1;
  int64_t bm() const { return 16 * tm; }
  int64_t bn() const { return 16 * tn; }
};

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// The block tile for an M x N result.
Config configFor(int64_t m, int64_t n, bool f64) {
  Config c;
  auto blocks = [&](int64_t bm, int64_t bn) { return ceilDiv(m, bm) * ceilDiv(n, bn); };
  if (m <= 16) {
    c.tm = 1;
    c.tn = f64 ? 4 : 8;
  } else if (!f64 && blocks(128, 128) >= kWaveBlocks) {
    c.tm = c.tn = 8;
    c.bk = 8;
  } else if (!f64 && blocks(128, 64) >= kWaveBlocks) {
    c.tm = 8;
    c.tn = 4;
  }
  return c;
}

/// K slices for `c`'s tile: enough blocks for two waves when the tiles alone give under one.
void chooseSplit(Config &c, int64_t m, int64_t n, int64_t k, bool f64) {
  int64_t b = ceilDiv(m, c.bm()) * ceilDiv(n, c.bn());
  c.split = 1;
  if (b < kWaveBlocks / 2 && k >= 256)
    c.split = std::min<int64_t>({ceilDiv(kWaveBlocks, b), k / 128, 16});
  // At most 16 MiB of partial sums.
  c.split = std::min<int64_t>(c.split, (int64_t(16) << 20) / (m * n * (f64 ? 8 : 4)));
  if (c.split < 2)
    c.split = 1;
}

/// Applies the test-hook attributes and chooses the K split; fails on a malformed hook.
LogicalResult applyOverrides(Operation *op, Config &c, int64_t m, int64_t n, int64_t k, bool f64) {
  if (Attribute a = op->getAttr("cuda.gemm_tile")) {
    auto s = dyn_cast<StringAttr>(a);
    struct Known {
      const char *name;
      int64_t tm, tn, bk;
    } known[] = {{"16x64", 1, 4, 16},
                 {"16x128", 1, 8, 16},
                 {"64x64", 4, 4, 16},
                 {"128x64", 8, 4, 16},
                 {"128x128", 8, 8, 8}};
    bool found = false;
    for (const Known &t : known)
      if (s && s.getValue() == t.name) {
        c.tm = t.tm;
        c.tn = t.tn;
        c.bk = t.bk;
        found = true;
      }
    if (!found)
      return op->emitOpError("cuda.gemm_tile must be one of \"16x64\", \"16x128\", \"64x64\", "
                             "\"128x64\", \"128x128\"");
  }
  chooseSplit(c, m, n, k, f64);
  if (Attribute a = op->getAttr("cuda.gemm_split")) {
    auto i = dyn_cast<IntegerAttr>(a);
    if (!i || i.getInt() < 1 || i.getInt() > 64)
      return op->emitOpError("cuda.gemm_split must be an integer in [1, 64]");
    c.split = i.getInt();
  }
  return success();
}

/// One operand's tile loader. The tile is [bk][width] in shared memory (K-major); the operand
/// is stored either with the tile's width contiguous (`wide`: element (k, w) at k * ld + w) or
/// with K contiguous (element (k, w) at w * ld + k).
struct Operand {
  std::string x;      // parameter name: "a" or "b"
  std::string upper;  // "A" or "B"
  std::string width;  // "kBM" or "kBN"
  std::string total;  // "kM" or "kN"
  std::string origin; // "m0" or "n0"
  bool wide = false;
  int64_t ld = 0, count = 0, loads = 0;

  /// Global -> registers for the tile starting at k0 (indices below kEnd are valid).
  void fetch(llvm::raw_ostream &os) const {
    os << "#pragma unroll\n"
       << "    for (int i = 0; i < k" << upper << "Loads; ++i) {\n"
       << "      const int e = tid + i * kThreads;\n";
    std::string ind = "      ";
    if (count % kThreads != 0) {
      os << "      if (e < k" << upper << "Count) {\n";
      ind = "        ";
    }
    std::string r = "r" + x + "[i]";
    if (wide) {
      os << ind << "const int kk = e / (" << width << " / kV), w = e % (" << width
         << " / kV) * kV;\n"
         << ind << "const long long k = k0 + kk, col = " << origin << " + w, at = k * kLd" << upper
         << " + col;\n"
         << ind << "if (vec" << upper << " && k < kEnd && col + kV <= " << total << ")\n"
         << ind << "  loadV(" << x << " + at, " << r << ");\n"
         << ind << "else\n"
         << ind << "  for (int v = 0; v < kV; ++v)\n"
         << ind << "    " << r << "[v] = k < kEnd && col + v < " << total << " ? " << x
         << "[at + v] : T(0);\n";
    } else {
      os << ind << "const int w = e / (kBK / kV), kk = e % (kBK / kV) * kV;\n"
         << ind << "const long long row = " << origin << " + w, k = k0 + kk, at = row * kLd"
         << upper << " + k;\n"
         << ind << "if (vec" << upper << " && row < " << total << " && k + kV <= kEnd)\n"
         << ind << "  loadV(" << x << " + at, " << r << ");\n"
         << ind << "else\n"
         << ind << "  for (int v = 0; v < kV; ++v)\n"
         << ind << "    " << r << "[v] = row < " << total << " && k + v < kEnd ? " << x
         << "[at + v] : T(0);\n";
    }
    if (count % kThreads != 0)
      os << "      }\n";
    os << "    }\n";
  }

  /// Registers -> shared tile `buf`.
  void stash(llvm::raw_ostream &os) const {
    os << "#pragma unroll\n"
       << "    for (int i = 0; i < k" << upper << "Loads; ++i) {\n"
       << "      const int e = tid + i * kThreads;\n";
    std::string ind = "      ";
    if (count % kThreads != 0) {
      os << "      if (e < k" << upper << "Count) {\n";
      ind = "        ";
    }
    if (wide) {
      os << ind << "const int kk = e / (" << width << " / kV), w = e % (" << width
         << " / kV) * kV;\n"
         << ind << "storeV(&tiles." << x << "[buf][kk][w], r" << x << "[i]);\n";
    } else {
      os << ind << "const int w = e / (kBK / kV), kk = e % (kBK / kV) * kV;\n"
         << ind << "for (int v = 0; v < kV; ++v)\n"
         << ind << "  tiles." << x << "[buf][kk + v][w] = r" << x << "[i][v];\n";
    }
    if (count % kThreads != 0)
      os << "      }\n";
    os << "    }\n";
  }
};

struct GemmEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<GemmEmitter, kernel::GemmOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto g = cast<kernel::GemmOp>(op);
    if (g.getNSelect() || g.getKSelect())
      return op->emitOpError(
          "the CUDA emitter has no n_select / k_select (a CPU decode step's) yet");
    for (Value v : op->getOperands())
      if (!cast<RankedTensorType>(v.getType()).hasStaticShape())
        return op->emitOpError("the CUDA emitter needs static shapes");
    Type elem = g.getResult().getType().getElementType();
    for (Value v : op->getOperands())
      if (cast<RankedTensorType>(v.getType()).getElementType() != elem)
        return op->emitOpError("the CUDA emitter needs every operand (masks included) in the "
                               "result's element type");
    bool f64 = elem.isF64();

    auto [ar, ac] = rowsAndWidth(g.getA());
    auto [br, bc] = rowsAndWidth(g.getB());
    bool ta = g.getTransposeA(), tb = g.getTransposeB();
    int64_t m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
    if (m <= 0 || n <= 0)
      return op->emitOpError("the CUDA emitter needs a non-empty result");
    auto tiles = [&](Value mask, int64_t dim, int64_t groups) {
      int64_t entries = mask ? numElements(mask) - 2 : 1;
      return entries > 0 && dim % entries == 0 && groups > 0 && entries % groups == 0;
    };
    if (!tiles(g.getMExtent(), m, g.getMGroups()) || !tiles(g.getNExtent(), n, g.getNGroups()) ||
        !tiles(g.getKExtent(), k, g.getKGroups()))
      return op->emitOpError("an extent mask does not tile its dimension");
    int64_t maskBlock = static_cast<int64_t>(g.getMaskBlock());
    if (g.getMask() && (maskBlock <= 0 || (numElements(g.getMask()) - 2) * maskBlock != n))
      return op->emitOpError("the mask does not cover the result's columns");
    auto operandIndex = [&](unsigned ods) { return g.getODSOperandIndexAndLength(ods).first; };
    Dim dm = Dim::of('m', m, g.getMExtent(), operandIndex(4), g.getMGroups());
    Dim dn = Dim::of('n', n, g.getNExtent(), operandIndex(5), g.getNGroups());
    Dim dk = Dim::of('k', k, g.getKExtent(), operandIndex(6), g.getKGroups());
    bool hasAcc = static_cast<bool>(g.getAcc()), hasMask = static_cast<bool>(g.getMask());

    Config c = configFor(m, n, f64);
    if (failed(applyOverrides(op, c, m, n, k, f64)))
      return failure();
    int64_t gridM = ceilDiv(m, c.bm()), gridN = ceilDiv(n, c.bn());
    if (gridN > 65535 || c.split > 65535)
      return op->emitOpError("the CUDA emitter supports at most 65535 column tiles (N = ")
             << n << ")";
    int64_t vec = f64 ? 2 : 4;

    Operand oa{"a", "A", "kBM", "kM", "m0", ta, ta ? m : k};
    Operand ob{"b", "B", "kBN", "kN", "n0", !tb, tb ? k : n};
    oa.count = c.bk * c.bm() / vec;
    ob.count = c.bk * c.bn() / vec;
    oa.loads = ceilDiv(oa.count, kThreads);
    ob.loads = ceilDiv(ob.count, kThreads);

    // Launches.
    bool split = c.split > 1;
    Launch main;
    main.entry = split ? "gemm_partial" : "gemm";
    main.grid = {gridM, gridN, c.split};
    main.block.x = kThreads;
    main.args = {{Kind::Operand, 0, 1, "a"}, {Kind::Operand, 1, 1, "b"}};
    auto epilogueInputs = [&](Launch &l) {
      if (hasAcc)
        l.args.push_back({Kind::Operand, operandIndex(2), 1, "acc"});
      if (hasMask)
        l.args.push_back({Kind::Operand, operandIndex(3), 1, "mask"});
    };
    auto extentArgs = [&](Launch &l, bool withK) {
      for (const Dim *d : {&dm, &dn, &dk})
        if (d->masked && (withK || d != &dk))
          l.args.push_back({Kind::Extent, d->operand, d->groups, d->arg()});
    };
    if (split) {
      main.args.push_back({Kind::Scratch, 0, 1, "scratch"});
    } else {
      epilogueInputs(main);
      main.args.push_back({Kind::Result, 0, 1, "result"});
    }
    extentArgs(main, true);
    Launch reduce;
    if (split) {
      reduce.entry = "gemm_reduce";
      reduce.grid.x = std::min<int64_t>(ceilDiv(m * n, kThreads), 4096);
      reduce.block.x = kThreads;
      epilogueInputs(reduce);
      reduce.args.push_back({Kind::Scratch, 0, 1, "scratch"});
      reduce.args.push_back({Kind::Result, 0, 1, "result"});
      extentArgs(reduce, false);
      out.scratchBytes.push_back(c.split * m * n * (f64 ? 8 : 4));
    }

    std::string T = f64 ? "double" : "float";
    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    os << "// result[" << m << ", " << n << "] = op(A) op(B)" << (hasAcc ? " + acc" : "")
       << (hasMask ? ", column c times mask[c / kMaskBlock]" : "") << "; A stored "
       << (ta ? "[K, M]" : "[M, K]") << ", B stored " << (tb ? "[N, K]" : "[K, N]") << ".\n";
    os << "// Block tile " << c.bm() << " x " << c.bn() << " x " << c.bk << ", " << kThreads
       << " threads of " << c.tm << " x " << c.tn << " results; " << c.split << " K slice(s).\n";
    os << "typedef " << T << " T;\n";
    os << "constexpr long long kM = " << m << ", kN = " << n << ", kK = " << k << ";\n";
    os << "constexpr long long kLdA = " << oa.ld << ", kLdB = " << ob.ld << ";\n";
    os << "constexpr int kThreads = " << kThreads << ";\n";
    os << "constexpr int kBM = " << c.bm() << ", kBN = " << c.bn() << ", kBK = " << c.bk << ";\n";
    os << "constexpr int kTM = " << c.tm << ", kTN = " << c.tn
       << ", kRV = " << std::min<int64_t>(c.tm, 4)
       << "; // rows in groups of kRV, columns in groups of 4\n";
    os << "constexpr int kV = " << vec << "; // elements per 16-byte vector\n";
    os << "constexpr long long kSplit = " << c.split << ";\n";
    os << "constexpr int kACount = " << oa.count << ", kBCount = " << ob.count
       << "; // vectors per tile\n";
    os << "constexpr int kALoads = " << oa.loads << ", kBLoads = " << ob.loads << ";\n";
    if (hasMask)
      os << "constexpr long long kMaskBlock = " << maskBlock << ";\n";
    dm.constants(os);
    dn.constants(os);
    dk.constants(os);
    os << "constexpr long long kKGroups = " << dk.groups << ";\n";
    if (!dk.masked)
      os << "constexpr long long kKStride = kK;\n";
    os << "\n";

    // Helpers.
    if (f64)
      os << "static __device__ __forceinline__ void loadV(const T *p, T *r) {\n"
         << "  const double2 v = *reinterpret_cast<const double2 *>(p);\n"
         << "  r[0] = v.x;\n  r[1] = v.y;\n}\n"
         << "static __device__ __forceinline__ void storeV(T *p, const T *r) {\n"
         << "  *reinterpret_cast<double2 *>(p) = make_double2(r[0], r[1]);\n}\n"
         << "static __device__ __forceinline__ T madd(T a, T b, T c) { return fma(a, b, c); }\n";
    else
      os << "static __device__ __forceinline__ void loadV(const T *p, T *r) {\n"
         << "  const float4 v = *reinterpret_cast<const float4 *>(p);\n"
         << "  r[0] = v.x;\n  r[1] = v.y;\n  r[2] = v.z;\n  r[3] = v.w;\n}\n"
         << "static __device__ __forceinline__ void storeV(T *p, const T *r) {\n"
         << "  *reinterpret_cast<float4 *>(p) = make_float4(r[0], r[1], r[2], r[3]);\n}\n"
         << "static __device__ __forceinline__ T madd(T a, T b, T c) { return fmaf(a, b, c); }\n";
    os << "// Four consecutive elements (16-byte aligned for floats, 32 for doubles).\n"
       << "static __device__ __forceinline__ void load4(const T *p, T *r) {\n"
       << "#pragma unroll\n"
       << "  for (int h = 0; h < 4; h += kV)\n"
       << "    loadV(p + h, r + h);\n}\n"
       << "static __device__ __forceinline__ void store4(T *p, const T *r) {\n"
       << "#pragma unroll\n"
       << "  for (int h = 0; h < 4; h += kV)\n"
       << "    storeV(p + h, r + h);\n}\n";
    if (dm.masked || dn.masked || dk.masked)
      os << "// The run-time extent, clamped to a group.\n"
         << "static __device__ __forceinline__ long long clampExtent(long long active, long long "
            "per) {\n"
         << "  return active < 0 ? 0 : (active > per ? per : active);\n}\n";
    if (dm.masked || dn.masked)
      os << "// Whether [lo, hi) meets a run [g * stride, g * stride + len).\n"
         << "static __device__ __forceinline__ bool anyActive(long long lo, long long hi, long "
            "long stride, long long len) {\n"
         << "  if (len <= 0)\n    return false;\n"
         << "  const long long off = lo % stride;\n"
         << "  return off < len || lo - off + stride < hi;\n}\n";
    os << "\n// Shared tiles, K-major, double-buffered; rows padded by 4 elements.\n"
       << "struct __align__(16) GemmTiles {\n"
       << "  T a[2][kBK][kBM + 4];\n"
       << "  T b[2][kBK][kBN + 4];\n};\n\n";

    // The main kernel.
    std::string sig = entrySignature(op, main);
    sig.replace(sig.find("__global__ void"), 15, "__global__ void __launch_bounds__(256)");
    os << sig << " {\n";
    os << "  __shared__ GemmTiles tiles;\n"
       << "  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;\n"
       << "  const long long m0 = (long long)blockIdx.x * kBM, n0 = (long long)blockIdx.y * kBN;\n";
    dm.declareLen(os);
    dn.declareLen(os);
    if (dk.masked)
      dk.declareLen(os);
    else
      os << "  const long long kLen = kK;\n";
    os << "  // A tile with no active row or column computes nothing (it only writes).\n"
       << "  const bool live = " << dm.any("m0", "min(m0 + kBM, kM)") << " && "
       << dn.any("n0", "min(n0 + kBN, kN)") << ";\n"
       << "  // The K tiles of the active runs, one run per group, split over blockIdx.z.\n"
       << "  const long long perRun = (kLen + kBK - 1) / kBK;\n"
       << "  const long long tiles_ = live ? kKGroups * perRun : 0;\n"
       << "  const long long tBegin = tiles_ * blockIdx.z / kSplit;\n"
       << "  const long long tEnd = tiles_ * (blockIdx.z + 1) / kSplit;\n";
    auto vecCondition = [&](const Operand &o) {
      bool ok = o.ld % vec == 0 && (o.wide || dk.groups == 1 || dk.stride % vec == 0);
      return ok ? "nestor::isAligned16(" + o.x + ")" : std::string("false");
    };
    os << "  const bool vecA = " << vecCondition(oa) << ", vecB = " << vecCondition(ob) << ";\n"
       << "  T ra[kALoads][kV], rb[kBLoads][kV];\n"
       << "  auto fetch = [&](long long t) {\n"
       << "    const long long run = t / perRun;\n"
       << "    const long long k0 = run * kKStride + (t - run * perRun) * kBK;\n"
       << "    const long long kEnd = run * kKStride + kLen;\n";
    oa.fetch(os);
    ob.fetch(os);
    os << "  };\n"
       << "  auto stash = [&](int buf) {\n";
    oa.stash(os);
    ob.stash(os);
    os << "  };\n"
       << "  T sum[kTM][kTN];\n"
       << "#pragma unroll\n"
       << "  for (int i = 0; i < kTM; ++i)\n"
       << "#pragma unroll\n"
       << "    for (int j = 0; j < kTN; ++j)\n"
       << "      sum[i][j] = T(0);\n"
       << "  if (tBegin < tEnd) {\n"
       << "    fetch(tBegin);\n"
       << "    stash(0);\n"
       << "  }\n"
       << "  __syncthreads();\n"
       << "  int buf = 0;\n"
       << "  for (long long t = tBegin; t < tEnd; ++t) {\n"
       << "    const bool more = t + 1 < tEnd;\n"
       << "    if (more)\n"
       << "      fetch(t + 1); // in flight while this tile is multiplied\n"
       << "#pragma unroll\n"
       << "    for (int kk = 0; kk < kBK; ++kk) {\n"
       << "      T av[kTM], bv[kTN];\n"
       << "#pragma unroll\n"
       << "      for (int q = 0; q < kTM / kRV; ++q)\n";
    if (c.tm >= 4)
      os << "        load4(&tiles.a[buf][kk][q * 16 * kRV + ty * kRV], av + q * kRV);\n";
    else
      os << "        av[q] = tiles.a[buf][kk][q * 16 + ty];\n";
    os << "#pragma unroll\n"
       << "      for (int q = 0; q < kTN / 4; ++q)\n"
       << "        load4(&tiles.b[buf][kk][q * 64 + tx * 4], bv + q * 4);\n"
       << "#pragma unroll\n"
       << "      for (int i = 0; i < kTM; ++i)\n"
       << "#pragma unroll\n"
       << "        for (int j = 0; j < kTN; ++j)\n"
       << "          sum[i][j] = madd(av[i], bv[j], sum[i][j]);\n"
       << "    }\n"
       << "    if (more)\n"
       << "      stash(buf ^ 1);\n"
       << "    __syncthreads();\n"
       << "    buf ^= 1;\n"
       << "  }\n";

    // Epilogue: row r = m0 + (i / kRV) * 16 kRV + ty kRV + i % kRV, columns in groups of 4 at
    // n0 + q * 64 + tx * 4.
    std::string target = split ? "partial" : "result";
    if (split)
      os << "  T *partial = static_cast<T *>(scratch) + (long long)blockIdx.z * kM * kN;\n";
    os << "  const bool vecOut = "
       << (n % vec == 0 ? "nestor::isAligned16(" + target + ")" : "false");
    if (!split && hasAcc && n % vec == 0)
      os << " && nestor::isAligned16(acc)";
    os << ";\n"
       << "#pragma unroll\n"
       << "  for (int i = 0; i < kTM; ++i) {\n"
       << "    const long long r = m0 + (i / kRV) * (16 * kRV) + ty * kRV + i % kRV;\n"
       << "    if (r >= kM)\n"
       << "      continue;\n";
    if (!split)
      os << "    const bool rowOn = " << dm.on("r") << ";\n";
    os << "#pragma unroll\n"
       << "    for (int q = 0; q < kTN / 4; ++q) {\n"
       << "      const long long c = n0 + q * 64 + tx * 4;\n"
       << "      T v[4];\n";
    if (split) {
      // Raw sums: the reduction applies extents, acc and the mask.
      os << "      for (int j = 0; j < 4; ++j)\n"
         << "        v[j] = sum[i][q * 4 + j];\n"
         << "      if (vecOut && c + 4 <= kN) {\n"
         << "        store4(partial + r * kN + c, v);\n"
         << "      } else {\n"
         << "        for (int j = 0; j < 4; ++j)\n"
         << "          if (c + j < kN)\n"
         << "            partial[r * kN + c + j] = v[j];\n"
         << "      }\n";
    } else {
      auto value = [&](const std::string &col, const std::string &vj, const std::string &ind) {
        std::string s;
        llvm::raw_string_ostream ss(s);
        ss << ind << "if (rowOn && " << dn.on(col) << ")\n"
           << ind << "  " << vj << " += sum[i][q * 4 + j];\n";
        if (hasMask)
          ss << ind << vj << " *= mask[" << col << " / kMaskBlock];\n";
        return s;
      };
      os << "      if (vecOut && c + 4 <= kN) {\n";
      if (hasAcc)
        os << "        load4(acc + r * kN + c, v);\n";
      else
        os << "        for (int j = 0; j < 4; ++j)\n"
           << "          v[j] = T(0);\n";
      os << "#pragma unroll\n"
         << "        for (int j = 0; j < 4; ++j) {\n"
         << value("(c + j)", "v[j]", "          ") << "        }\n"
         << "        store4(result + r * kN + c, v);\n"
         << "      } else {\n"
         << "        for (int j = 0; j < 4; ++j) {\n"
         << "          if (c + j >= kN)\n"
         << "            break;\n"
         << "          v[j] = " << (hasAcc ? "acc[r * kN + c + j]" : "T(0)") << ";\n"
         << value("(c + j)", "v[j]", "          ") << "          result[r * kN + c + j] = v[j];\n"
         << "        }\n"
         << "      }\n";
    }
    os << "    }\n"
       << "  }\n"
       << "}\n";

    if (split) {
      std::string rsig = entrySignature(op, reduce);
      rsig.replace(rsig.find("__global__ void"), 15, "__global__ void __launch_bounds__(256)");
      os << "\n// Sums the K slices in order, then acc and the mask.\n" << rsig << " {\n";
      os << "  const T *partial = static_cast<const T *>(scratch);\n";
      dm.declareLen(os);
      dn.declareLen(os);
      os << "  for (long long i : nestor::gridStride(kM * kN)) {\n"
         << "    const long long r = i / kN, c = i % kN;\n"
         << "    T v = " << (hasAcc ? "acc[i]" : "T(0)") << ";\n"
         << "    if (" << dm.on("r") << " && " << dn.on("c") << ") {\n"
         << "      T s = T(0);\n"
         << "      for (long long z = 0; z < kSplit; ++z)\n"
         << "        s += partial[z * kM * kN + i];\n"
         << "      v += s;\n"
         << "    }\n";
      if (hasMask)
        os << "    v *= mask[c / kMaskBlock];\n";
      os << "    result[i] = v;\n"
         << "  }\n"
         << "}\n";
    }

    out.kind = "gemm";
    out.launches.push_back(std::move(main));
    if (split)
      out.launches.push_back(std::move(reduce));
    return success();
  }
};

} // namespace

void nestor::cuda::registerGemmEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::GemmOp::attachInterface<GemmEmitter>(*ctx);
  });
}
