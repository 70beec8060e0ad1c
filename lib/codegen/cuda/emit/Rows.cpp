//===- Rows.cpp - CUDA emitters of the row kernels -------------------------===//
//
// Semantics: lib/codegen/cpu/Kernels.h, "Row kernels", and runtime/Executor.cpp for the
// operands (depth_gate's gamma = keep[layer], the mask op's block/groups, extents).
//
// Parallelisation:
// - Elementwise kernels (embed, mask, relu2, depth_gate, add, mul, and the backward kernels
//   that reduce nothing) are grid-stride loops over packs of 16 bytes (4 floats or 2 doubles),
//   loaded and stored as one vector when every pointer is 16-byte aligned and element by element
//   otherwise (the same packs and order either way).
// - Norms reduce over a row: one thread block per row (rmsnorm), or per chunk of rows.
// - Column reductions over rows (dw, dmask) never use float atomics: a first launch gives each
//   block a fixed chunk of rows and writes its column partials to a scratch buffer; a second
//   launch sums the partials over blocks in block order. The result depends on the sizes only.
// - embed_grad's scatter-add is a gather: each block owns a tile of vocabulary rows (and a
//   slice of columns), scans the tokens for rows in its tile (in row order), and sums them
//   token by token in row order, so dTable is the CPU kernel's sum, in the CPU kernel's order.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <limits>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool isF64(Value v) { return cast<ShapedType>(v.getType()).getElementType().isF64(); }

/// Elements in a 16-byte pack of `v`'s element type.
int64_t packOf(Value v) { return isF64(v) ? 2 : 4; }

/// The pack for rows of `width` elements: a pack never straddles two rows.
int64_t rowPackOf(Value v, int64_t width) {
  int64_t p = packOf(v);
  return width % p == 0 ? p : 1;
}

/// `typedef T`, and the Pack type with its load/store helpers when `pack` > 0.
void emitTypes(raw_ostream &os, Operation *op, Value typed, int64_t pack = 0) {
  os << prelude(op);
  os << "typedef " << elementName(typed) << " T;\n";
  if (pack <= 0)
    return;
  os << "constexpr int kPack = " << pack << ";\n"
     << "struct __align__(" << pack * (isF64(typed) ? 8 : 4) << ") Pack {\n"
     << "  T v[kPack];\n"
     << "};\n"
     << R"(
// One pack at p: a single vector access when `vec` (every pointer 16-byte aligned).
__device__ __forceinline__ Pack loadPack(const T *p, bool vec) {
  Pack r;
  if (vec) {
    r = *reinterpret_cast<const Pack *>(p);
  } else {
#pragma unroll
    for (int j = 0; j < kPack; ++j)
      r.v[j] = p[j];
  }
  return r;
}

__device__ __forceinline__ void storePack(T *p, const Pack &x, bool vec) {
  if (vec) {
    *reinterpret_cast<Pack *>(p) = x;
  } else {
#pragma unroll
    for (int j = 0; j < kPack; ++j)
      p[j] = x.v[j];
  }
}
)";
}

/// Grid and block of a grid-stride loop over `items`.
void flatLaunch(Launch &l, int64_t items, int64_t maxBlocks = 65536) {
  l.block.x = blockFor(std::max<int64_t>(items, 1), 256);
  l.grid.x = std::clamp<int64_t>(ceilDiv(std::max<int64_t>(items, 1), l.block.x), 1, maxBlocks);
}

/// An elementwise kernel over n elements, as a grid-stride loop over packs.
struct Flat {
  Launch launch;
  /// (local, pointer): `const Pack local` holds the pack of `pointer` at the loop's offset.
  std::vector<std::pair<std::string, std::string>> loads;
  /// (pointer, local): `Pack local` (which the lane code sets) is stored to `pointer`.
  std::vector<std::pair<std::string, std::string>> stores;
  /// Code before the loop, the body for lane j of element e (and column c when `width`), and
  /// code after the loop (reached by every thread).
  std::string setup, lane, after;
  int64_t width = 0;
};

void emitFlat(raw_ostream &os, Operation *op, Flat &f, int64_t n, int64_t pack,
              int64_t maxBlocks = 65536) {
  flatLaunch(f.launch, n / pack + n % pack, maxBlocks);
  os << "constexpr long long kN = " << n << ";\n"
     << "constexpr long long kPacks = kN / kPack;\n";
  if (f.width)
    os << "constexpr long long kW = " << f.width << ";\n";
  os << "\n" << entrySignature(op, f.launch) << " {\n" << f.setup;
  os << "  const bool vec = kPack > 1";
  for (auto &[local, ptr] : f.loads)
    os << " && nestor::isAligned16(" << ptr << ")";
  for (auto &[ptr, local] : f.stores)
    os << " && nestor::isAligned16(" << ptr << ")";
  os << ";\n"
     << "  for (long long p : nestor::gridStride(kPacks)) {\n"
     << "    const long long e0 = p * kPack;\n";
  if (f.width)
    os << "    const long long c0 = e0 % kW;\n";
  for (auto &[local, ptr] : f.loads)
    os << "    const Pack " << local << " = loadPack(" << ptr << " + e0, vec);\n";
  for (auto &[ptr, local] : f.stores)
    os << "    Pack " << local << ";\n";
  os << "#pragma unroll\n"
     << "    for (int j = 0; j < kPack; ++j) {\n"
     << "      const long long e = e0 + j;\n"
     << "      (void)e;\n";
  if (f.width)
    os << "      const long long c = c0 + j;\n";
  os << f.lane << "    }\n";
  for (auto &[ptr, local] : f.stores)
    os << "    storePack(" << ptr << " + e0, " << local << ", vec);\n";
  os << "  }\n";
  if (n % pack) {
    // The last n % kPack elements, one per thread, in the packs' lane order.
    os << "  for (long long e = kPacks * kPack + (long long)blockIdx.x * blockDim.x + threadIdx.x;"
          " e < kN;\n"
          "       e += (long long)gridDim.x * blockDim.x) {\n"
          "    const int j = 0;\n";
    if (f.width)
      os << "    const long long c = e % kW;\n";
    for (auto &[local, ptr] : f.loads)
      os << "    Pack " << local << ";\n    " << local << ".v[0] = " << ptr << "[e];\n";
    for (auto &[ptr, local] : f.stores)
      os << "    Pack " << local << ";\n";
    os << f.lane;
    for (auto &[ptr, local] : f.stores)
      os << "    " << ptr << "[e] = " << local << ".v[0];\n";
    os << "  }\n";
  }
  os << f.after << "}\n";
}

/// The first launch of a column reduction: block (b, s) owns rows [b * kRPB, (b + 1) * kRPB)
/// and columns [s * kSlice, (s + 1) * kSlice), each thread the columns cBase + threadIdx.x +
/// k * kThreads (k < kCPT) of those rows. With `wholeRows` (kernels that reduce over a row too)
/// one block spans the row.
struct RowChunks {
  int64_t rows, width, threads, perThread, rowsPerBlock, blocks, slices;
};

RowChunks rowChunks(int64_t rows, int64_t width, bool wholeRows) {
  RowChunks t;
  t.rows = rows;
  t.width = width;
  if (wholeRows) {
    t.threads = blockFor(ceilDiv(width, 4), 1024);
    t.perThread = ceilDiv(width, t.threads);
  } else {
    t.threads = blockFor(width, 256);
    t.perThread = std::min<int64_t>(4, ceilDiv(width, t.threads));
  }
  t.slices = ceilDiv(width, t.threads * t.perThread);
  // About 1024 row chunks on large inputs, at least 4 rows each.
  t.rowsPerBlock = std::min(rows, std::max<int64_t>(4, ceilDiv(rows, 1024)));
  t.blocks = ceilDiv(rows, t.rowsPerBlock);
  return t;
}

void setRowChunkLaunch(Launch &l, const RowChunks &t) {
  l.grid.x = t.blocks;
  l.grid.y = t.slices;
  l.block.x = t.threads;
}

void emitRowChunkConstants(raw_ostream &os, const RowChunks &t) {
  os << "constexpr long long kRows = " << t.rows << ";\n"
     << "constexpr int kThreads = " << t.threads << ";\n"
     << "constexpr int kCPT = " << t.perThread << "; // columns per thread\n"
     << "constexpr long long kSlice = kThreads * kCPT; // columns per block\n"
     << "constexpr long long kRPB = " << t.rowsPerBlock << "; // rows per block\n";
}

constexpr const char *kRowChunkStart = R"(  const long long r0 = (long long)blockIdx.x * kRPB;
  const long long r1 = r0 + kRPB < kRows ? r0 + kRPB : kRows;
  const long long cBase = (long long)blockIdx.y * kSlice;
)";

/// The second launch of a column reduction: column j of the [blocks, width] partials in
/// scratch 0 summed over blocks in block order (32 columns x 8 block strides per thread
/// block, the 8 strides added in order), `store` run with `j` and `total`.
Launch emitColumnSum(raw_ostream &os, Operation *op, StringRef entry, int64_t blocks, int64_t width,
                     std::vector<KernelArg> outs, StringRef store) {
  Launch l;
  l.entry = entry.str();
  l.grid.x = ceilDiv(width, 32);
  l.block.x = 32;
  l.block.y = 8;
  l.args.push_back({Kind::Scratch, 0, 1, "partials"});
  for (KernelArg &a : outs)
    l.args.push_back(a);
  os << "\nconstexpr long long kSumBlocks = " << blocks << ";\n"
     << "constexpr long long kSumWidth = " << width << ";\n"
     << entrySignature(op, l) << " {\n"
     << R"(  __shared__ T strides[8][32];
  const T *parts = static_cast<const T *>(partials);
  const long long j = (long long)blockIdx.x * 32 + threadIdx.x;
  T acc = 0;
  if (j < kSumWidth)
    for (long long b = threadIdx.y; b < kSumBlocks; b += 8)
      acc += parts[b * kSumWidth + j];
  strides[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < kSumWidth) {
    T total = strides[0][threadIdx.x];
    for (int y = 1; y < 8; ++y)
      total += strides[y][threadIdx.x];
)" << store
     << "  }\n}\n";
  return l;
}

LogicalResult finish(KernelSource &out, StringRef kind, std::vector<Launch> launches,
                     std::vector<int64_t> scratch = {}) {
  out.kind = kind.str();
  out.launches = std::move(launches);
  out.scratchBytes = std::move(scratch);
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

/// y = m * sigma * w * x / sqrt(mean_c x^2 + eps * phi) over the first `active` channels (the
/// rest 0); the mean is over all d channels. One block per row.
struct RMSNormEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<RMSNormEmitter, kernel::RMSNormOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto norm = cast<kernel::RMSNormOp>(op);
    auto [rows, d] = rowsAndWidth(norm.getInput());
    bool masked = static_cast<bool>(norm.getMask());
    bool dense = masked && norm.getPrefixDense();
    Launch l;
    l.entry = "rmsnorm_forward";
    l.grid.x = rows;
    l.block.x = blockFor(d);
    l.args = {{Kind::Operand, 0, 1, "x"}, {Kind::Operand, 1, 1, "w"}};
    if (masked)
      l.args.push_back({Kind::Operand, 2, 1, "mask"});
    l.args.push_back({Kind::Result, 0, 1, "y"});
    if (dense)
      l.args.push_back({Kind::Extent, 2, 1, "active"});

    std::string T = elementName(norm.getInput());
    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    os << "typedef " << T << " T;\n";
    os << "constexpr long long kD = " << d << ";\n";
    os << "constexpr T kEps = " << doubleLiteral(norm.getEpsilon().convertToDouble()) << ";\n\n";
    os << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kD;\n";
    os << "  __shared__ T scratch[32];\n"
       << "  const T *xr = x + (long long)blockIdx.x * kD;\n"
       << "  T *yr = y + (long long)blockIdx.x * kD;\n"
       << "  // Channels past `active` are zero in the residual stream (prefix-dense).\n"
       << "  T ss = 0;\n"
       << "  for (long long c = threadIdx.x; c < active; c += blockDim.x)\n"
       << "    ss += xr[c] * xr[c];\n"
       << "  ss = nestor::blockSum(ss, scratch);\n";
    if (masked)
      os << "  const T phi = mask[kD], sigma = mask[kD + 1];\n";
    else
      os << "  const T phi = 1, sigma = 1;\n";
    os << "  const T inv = T(1) / sqrt(ss / T(kD) + kEps * phi);\n"
       << "  for (long long c = threadIdx.x; c < kD; c += blockDim.x)\n"
       << "    yr[c] = c < active ? " << (masked ? "mask[c] * " : "")
       << "sigma * w[c] * xr[c] * inv : T(0);\n"
       << "}\n";
    out.kind = "rmsnorm";
    out.launches.push_back(std::move(l));
    return success();
  }
};

/// dx per row (three block reductions: sum x^2, sum g m sigma w x, sum g m w xn), and the
/// column sums dw, dm and the scalars dphi, dsigma through per-chunk partials
/// [dw (d) | dm (d) | dphi | dsigma] summed by a second launch.
struct RMSNormGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<RMSNormGradEmitter, kernel::RMSNormGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto norm = cast<kernel::RMSNormGradOp>(op);
    auto [rows, d] = rowsAndWidth(norm.getInput());
    bool masked = static_cast<bool>(norm.getMask());
    bool dense = masked && norm.getPrefixDense();
    bool dMask = static_cast<bool>(norm.getMaskGrad());
    RowChunks t = rowChunks(rows, d, /*wholeRows=*/true);
    int64_t width = dMask ? 2 * d + 2 : d;

    Launch l;
    l.entry = "rmsnorm_grad_rows";
    setRowChunkLaunch(l, t);
    l.args = {{Kind::Operand, 0, 1, "x"}, {Kind::Operand, 1, 1, "w"}, {Kind::Operand, 2, 1, "dy"}};
    if (masked)
      l.args.push_back({Kind::Operand, 3, 1, "mask"});
    l.args.push_back({Kind::Result, 0, 1, "dx"});
    l.args.push_back({Kind::Scratch, 0, 1, "partials"});
    if (dense)
      l.args.push_back({Kind::Extent, 3, 1, "active"});

    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, norm.getInput());
    emitRowChunkConstants(os, t);
    os << "constexpr long long kD = " << d << ";\n"
       << "constexpr long long kWidth = " << width << "; // partials per block\n"
       << "constexpr T kEps = " << doubleLiteral(norm.getEpsilon().convertToDouble()) << ";\n\n"
       << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kD;\n";
    os << "  __shared__ T red[32];\n" << kRowChunkStart;
    if (masked)
      os << "  const T phi = mask[kD], sigma = mask[kD + 1];\n";
    else
      os << "  const T phi = 1, sigma = 1;\n";
    os << "  T wv[kCPT], mv[kCPT], accW[kCPT], accM[kCPT];\n"
       << "#pragma unroll\n"
       << "  for (int k = 0; k < kCPT; ++k) {\n"
       << "    const long long c = cBase + threadIdx.x + (long long)k * kThreads;\n"
       << "    wv[k] = c < active ? w[c] : T(0);\n"
       << "    mv[k] = c < active ? " << (masked ? "mask[c]" : "T(1)") << " : T(0);\n"
       << "    accW[k] = accM[k] = T(0);\n"
       << "  }\n"
       << R"(  T dPhi = 0, dSigma = 0;
  for (long long r = r0; r < r1; ++r) {
    const T *xr = x + r * kD, *g = dy + r * kD;
    T xv[kCPT], gv[kCPT];
    T ss = 0;
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      xv[k] = c < active ? xr[c] : T(0);
      gv[k] = c < active ? g[c] : T(0);
      ss += xv[k] * xv[k];
    }
    // Channels past `active` are zero in the residual stream (prefix-dense).
    ss = nestor::blockSum(ss, red);
    const T inv = T(1) / sqrt(ss / T(kD) + kEps * phi);
    T gx = 0, ds = 0;
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      if (c < active) {
        const T xn = xv[k] * inv;
        gx += gv[k] * mv[k] * sigma * wv[k] * xv[k];
        accW[k] += gv[k] * mv[k] * sigma * xn;
        accM[k] += gv[k] * sigma * wv[k] * xn;
        ds += gv[k] * mv[k] * wv[k] * xn;
      }
    }
    gx = nestor::blockSum(gx, red);
)";
    if (dMask)
      os << "    ds = nestor::blockSum(ds, red);\n";
    os << R"(    const T inv3 = inv * inv * inv;
    T *dxr = dx + r * kD;
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      if (c < kD)
        dxr[c] = c < active ? gv[k] * mv[k] * sigma * wv[k] * inv - xv[k] * inv3 / T(kD) * gx : T(0);
    }
    dPhi += T(-0.5) * kEps * inv3 * gx;
    dSigma += ds;
  }
  T *part = static_cast<T *>(partials) + (long long)blockIdx.x * kWidth;
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
    if (c < kD) {
      part[c] = accW[k];
)";
    if (dMask)
      os << "      part[kD + c] = accM[k];\n";
    os << "    }\n  }\n";
    if (dMask)
      os << "  if (threadIdx.x == 0) {\n"
         << "    part[2 * kD] = dPhi;\n"
         << "    part[2 * kD + 1] = dSigma;\n"
         << "  }\n";
    else
      os << "  (void)dPhi;\n  (void)dSigma;\n  (void)accM;\n";
    os << "}\n";

    std::vector<KernelArg> outs = {{Kind::Result, 1, 1, "dw"}};
    if (dMask)
      outs.push_back({Kind::Result, 2, 1, "dm"});
    Launch sum = emitColumnSum(os, op, "rmsnorm_grad_columns", t.blocks, width, outs,
                               dMask ? "    if (j < kD)\n      dw[j] = total;\n"
                                       "    else\n      dm[j - kD] = total;\n"
                                     : "    dw[j] = total;\n");
    int64_t bytes = isF64(norm.getInput()) ? 8 : 4;
    return finish(out, "rmsnorm_grad", {l, sum}, {t.blocks * width * bytes});
  }
};

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

/// out[r] = table[tokens[r]] * m over the active prefix. A token outside [0, vocab) writes a
/// zero row and raises the status word (scratch 0, one unsigned 64-bit word, zeroed before the
/// launch): atomicMax of ((rows - r) << 32 | uint32(token)), so a nonzero word names the first
/// bad row r = rows - (word >> 32) and its token int32(word & 0xffffffff).
struct EmbedEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<EmbedEmitter, kernel::EmbedOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto embed = cast<kernel::EmbedOp>(op);
    auto [vocab, d] = rowsAndWidth(embed.getTable());
    int64_t rows = numElements(embed.getTokens());
    if (rows > kInt32Max)
      return op->emitOpError("CUDA embed supports at most 2^31-1 tokens, got ") << rows;
    bool masked = static_cast<bool>(embed.getMask());
    bool dense = masked && embed.getPrefixDense();
    int64_t pack = rowPackOf(embed.getTable(), d);

    Launch l;
    l.entry = "embed_forward";
    l.args = {{Kind::Operand, 0, 1, "tokens"}, {Kind::Operand, 1, 1, "table"}};
    if (masked)
      l.args.push_back({Kind::Operand, 2, 1, "mask"});
    l.args.push_back({Kind::Result, 0, 1, "out"});
    l.args.push_back({Kind::Scratch, 0, 1, "status"});
    if (dense)
      l.args.push_back({Kind::Extent, 2, 1, "active"});
    flatLaunch(l, rows * d / pack);

    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, embed.getTable(), pack);
    os << "constexpr long long kRows = " << rows << ";\n"
       << "constexpr long long kVocab = " << vocab << ";\n"
       << "constexpr long long kD = " << d << ";\n"
       << "constexpr long long kPacks = kRows * kD / kPack;\n\n"
       << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kD;\n";
    os << R"(  const bool vec = kPack > 1 && nestor::isAligned16(table) && nestor::isAligned16(out);
  for (long long p : nestor::gridStride(kPacks)) {
    const long long e0 = p * kPack, r = e0 / kD, c0 = e0 % kD;
    const int token = tokens[r];
    Pack o;
    if (token < 0 || token >= kVocab) {
#pragma unroll
      for (int j = 0; j < kPack; ++j)
        o.v[j] = T(0);
      if (c0 == 0)
        atomicMax(static_cast<unsigned long long *>(status),
                  ((unsigned long long)(kRows - r) << 32) | (unsigned long long)(unsigned)token);
    } else if (c0 >= active) {
#pragma unroll
      for (int j = 0; j < kPack; ++j)
        o.v[j] = T(0);
    } else {
      const Pack t = loadPack(table + (long long)token * kD + c0, vec);
#pragma unroll
      for (int j = 0; j < kPack; ++j)
)";
    os << "        o.v[j] = c0 + j < active ? t.v[j]" << (masked ? " * mask[c0 + j]" : "")
       << " : T(0);\n"
       << "    }\n"
       << "    storePack(out + e0, o, vec);\n"
       << "  }\n"
       << "}\n";
    return finish(out, "embed", {l}, {8});
  }
};

/// dTable: block (x, y) owns vocabulary rows [64x, 64x + 64) and a slice of columns. It scans
/// the tokens in row order (a block-wide compaction per chunk of kThreads tokens) into a list
/// of its rows, groups the list by token (stably), and sums dOut * m over each token's rows in
/// row order into dTable (rows of the tile no token names are zero). The list holds kCap rows;
/// a full list is summed and emptied, the next batch continuing from the sums written. dMask:
/// each block's sums of dOut * table[v] go to partials [tiles, d], summed in tile order by a
/// second launch. Tokens outside [0, vocab) match no tile and are ignored (the forward kernel
/// has reported them).
struct EmbedGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<EmbedGradEmitter, kernel::EmbedGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto embed = cast<kernel::EmbedGradOp>(op);
    auto [vocab, d] = rowsAndWidth(embed.getTable());
    int64_t rows = numElements(embed.getTokens());
    if (rows > kInt32Max)
      return op->emitOpError("CUDA embed_grad supports at most 2^31-1 tokens, got ") << rows;
    bool masked = static_cast<bool>(embed.getMask());
    bool dense = masked && embed.getPrefixDense();
    bool dMask = static_cast<bool>(embed.getMaskGrad());
    constexpr int64_t kVT = 64;
    int64_t threads = blockFor(d, 256);
    int64_t perThread = std::min<int64_t>(4, ceilDiv(d, threads));
    int64_t slice = threads * perThread, tiles = ceilDiv(vocab, kVT);

    Launch l;
    l.entry = "embed_grad_table";
    l.grid.x = tiles;
    l.grid.y = ceilDiv(d, slice);
    l.block.x = threads;
    l.args = {{Kind::Operand, 0, 1, "tokens"}};
    if (dMask)
      l.args.push_back({Kind::Operand, 1, 1, "table"});
    l.args.push_back({Kind::Operand, 2, 1, "dy"});
    if (masked)
      l.args.push_back({Kind::Operand, 3, 1, "mask"});
    l.args.push_back({Kind::Result, 0, 1, "dtable"});
    if (dMask)
      l.args.push_back({Kind::Scratch, 0, 1, "partials"});
    if (dense)
      l.args.push_back({Kind::Extent, 3, 1, "active"});

    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, embed.getTable());
    os << "constexpr long long kRows = " << rows << ";\n"
       << "constexpr long long kVocab = " << vocab << ";\n"
       << "constexpr long long kD = " << d << ";\n"
       << "constexpr int kThreads = " << threads << ";\n"
       << "constexpr int kWarps = kThreads / 32;\n"
       << "constexpr int kCPT = " << perThread << "; // columns per thread\n"
       << "constexpr long long kSlice = kThreads * kCPT; // columns per block\n"
       << "constexpr int kVT = " << kVT << "; // vocabulary rows per block\n"
       << "constexpr int kCap = 1024; // rows listed before they are summed\n\n"
       << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kD;\n";
    os << R"(  __shared__ int hits[kCap];     // rows whose token is in this tile, in row order
  __shared__ int hitToken[kCap]; // their token - v0
  __shared__ int grouped[kCap];  // the same rows grouped by token, row order within a token
  __shared__ int runStart[kVT], runCount[kVT];
  __shared__ int warpHits[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const long long v0 = (long long)blockIdx.x * kVT;
  const long long vEnd = v0 + kVT < kVocab ? v0 + kVT : kVocab;
  const long long cBase = (long long)blockIdx.y * kSlice;
  T mv[kCPT], macc[kCPT];
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
)";
    os << "    mv[k] = c < active ? " << (masked ? "mask[c]" : "T(1)") << " : T(0);\n";
    os << R"(    macc[k] = T(0);
  }
  unsigned long long written = 0; // bit v: row v0 + v of dtable holds a partial sum
  if (cBase < active) { // uniform: the slice has active columns
    int count = 0;
    for (long long base = 0;; base += kThreads) {
      const bool more = base < kRows;
      const long long r = base + threadIdx.x;
      const int token = more && r < kRows ? tokens[r] : -1;
      const int hit = token >= v0 && token < vEnd ? 1 : 0;
      // Block-wide exclusive scan of `hit` (warp scans, then the warps' totals in order).
      int s = hit;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(nestor::kFullWarpMask, s, o);
        if (lane >= o)
          s += u;
      }
      __syncthreads(); // the previous chunk's readers of warpHits are done
      if (lane == 31)
        warpHits[warp] = s;
      __syncthreads();
      int before = 0, total = 0;
      for (int w = 0; w < kWarps; ++w) {
        const int n = warpHits[w];
        before += w < warp ? n : 0;
        total += n;
      }
      if (count > 0 && (!more || count + total > kCap)) {
        // Group the listed rows by token, keeping row order (one thread per token).
        for (int v = threadIdx.x; v < kVT; v += kThreads) {
          int n = 0;
          for (int i = 0; i < count; ++i)
            n += hitToken[i] == v;
          runCount[v] = n;
        }
        __syncthreads();
        if (threadIdx.x == 0)
          for (int v = 0, start = 0; v < kVT; ++v) {
            runStart[v] = start;
            start += runCount[v];
          }
        __syncthreads();
        for (int v = threadIdx.x; v < kVT; v += kThreads) {
          int at = runStart[v];
          for (int i = 0; i < count; ++i)
            if (hitToken[i] == v)
              grouped[at++] = hits[i];
        }
        __syncthreads();
        for (int v = 0; v < kVT; ++v) {
          const int n = runCount[v], start = runStart[v];
          if (n == 0)
            continue;
          T *dst = dtable + (v0 + v) * kD;
          const bool resume = (written >> v) & 1ull;
          T acc[kCPT];
)";
    if (dMask)
      os << "          const T *src = table + (v0 + v) * kD;\n"
         << "          T tv[kCPT];\n";
    os << R"(#pragma unroll
          for (int k = 0; k < kCPT; ++k) {
            const long long c = cBase + threadIdx.x + (long long)k * kThreads;
            acc[k] = resume && c < active ? dst[c] : T(0);
)";
    if (dMask)
      os << "            tv[k] = c < active ? src[c] : T(0);\n";
    os << R"(          }
          for (int i = start; i < start + n; ++i) {
            const T *g = dy + (long long)grouped[i] * kD;
#pragma unroll
            for (int k = 0; k < kCPT; ++k) {
              const long long c = cBase + threadIdx.x + (long long)k * kThreads;
              if (c < active) {
                const T gv = g[c];
                acc[k] += gv * mv[k];
)";
    if (dMask)
      os << "                macc[k] += gv * tv[k];\n";
    os << R"(              }
            }
          }
#pragma unroll
          for (int k = 0; k < kCPT; ++k) {
            const long long c = cBase + threadIdx.x + (long long)k * kThreads;
            if (c < kD)
              dst[c] = acc[k];
          }
          written |= 1ull << v;
        }
        count = 0;
      }
      if (!more)
        break;
      if (hit) {
        const int at = count + before + s - 1;
        hits[at] = (int)r;
        hitToken[at] = token - (int)v0;
      }
      count += total;
    }
  }
  // Rows of the tile no token names.
  for (int v = 0; v < kVT && v0 + v < kVocab; ++v) {
    if ((written >> v) & 1ull)
      continue;
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      if (c < kD)
        dtable[(v0 + v) * kD + c] = T(0);
    }
  }
)";
    if (dMask)
      os << R"(  T *part = static_cast<T *>(partials) + (long long)blockIdx.x * kD;
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
    if (c < kD)
      part[c] = macc[k];
  }
)";
    else
      os << "  (void)macc;\n";
    os << "}\n";

    std::vector<Launch> launches = {l};
    std::vector<int64_t> scratch;
    if (dMask) {
      launches.push_back(emitColumnSum(os, op, "embed_grad_mask", tiles, d,
                                       {{Kind::Result, 1, 1, "dm"}},
                                       "    dm[j] = total;\n"
                                       "    if (j == 0)\n"
                                       "      dm[kD] = dm[kD + 1] = T(0);\n"));
      scratch.push_back(tiles * d * (isF64(embed.getTable()) ? 8 : 4));
    }
    return finish(out, "embed_grad", std::move(launches), std::move(scratch));
  }
};

//===----------------------------------------------------------------------===//
// Channel mask
//===----------------------------------------------------------------------===//

/// The mask op's layout: `block` channels per entry, entries in `groups` equal groups.
LogicalResult maskLayout(Operation *op, Value mask, int64_t width, int64_t block, int64_t groups,
                         int64_t &entries) {
  if (block <= 0 || width % block != 0)
    return op->emitOpError("CUDA mask: block ") << block << " does not divide width " << width;
  entries = width / block;
  if (numElements(mask) != entries + 2)
    return op->emitOpError("CUDA mask: the mask has ")
           << numElements(mask) << " values, expected " << entries + 2 << " (width / block + 2)";
  if (groups <= 0 || entries % groups != 0)
    return op->emitOpError("CUDA mask: groups ")
           << groups << " do not divide " << entries << " entries";
  return success();
}

void emitMaskConstants(raw_ostream &os, int64_t block, int64_t entries, int64_t groups) {
  os << "constexpr long long kBlock = " << block << "; // channels per mask entry\n"
     << "constexpr long long kEntries = " << entries << ";\n"
     << "constexpr long long kPerGroup = " << entries / groups << ";\n";
}

/// y = x * m[c / block], entry i active when i % perGroup < active. Elementwise.
struct MaskEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MaskEmitter, kernel::MaskOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto mk = cast<kernel::MaskOp>(op);
    auto [rows, width] = rowsAndWidth(mk.getInput());
    int64_t block = mk.getBlock(), groups = mk.getGroups(), entries = 0;
    if (failed(maskLayout(op, mk.getMask(), width, block, groups, entries)))
      return failure();
    bool dense = mk.getPrefixDense();
    int64_t pack = rowPackOf(mk.getInput(), width);
    Flat f;
    f.launch.entry = "mask_forward";
    f.launch.args = {
        {Kind::Operand, 0, 1, "x"}, {Kind::Operand, 1, 1, "mask"}, {Kind::Result, 0, 1, "y"}};
    if (dense)
      f.launch.args.push_back({Kind::Extent, 1, groups, "active"});
    f.width = width;
    f.loads = {{"a", "x"}};
    f.stores = {{"y", "o"}};
    if (!dense)
      f.setup = "  const long long active = kPerGroup;\n";
    f.lane = "      const long long i = c / kBlock;\n"
             "      o.v[j] = a.v[j] * (i % kPerGroup < active ? mask[i] : T(0));\n";
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, mk.getInput(), pack);
    emitMaskConstants(os, block, entries, groups);
    emitFlat(os, op, f, rows * width, pack);
    return finish(out, "mask", {f.launch});
  }
};

/// dx = dy * m[c / block] and per-chunk column partials of dy * x (active entries only);
/// the second launch sums them over chunks. With block > 1 the column sums go to scratch 1
/// and a third launch adds each entry's block of columns.
struct MaskGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MaskGradEmitter, kernel::MaskGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto mk = cast<kernel::MaskGradOp>(op);
    auto [rows, width] = rowsAndWidth(mk.getInput());
    int64_t block = mk.getBlock(), groups = mk.getGroups(), entries = 0;
    if (failed(maskLayout(op, mk.getMask(), width, block, groups, entries)))
      return failure();
    bool dense = mk.getPrefixDense();
    RowChunks t = rowChunks(rows, width, /*wholeRows=*/false);
    int64_t bytes = isF64(mk.getInput()) ? 8 : 4;

    Launch l;
    l.entry = "mask_grad_rows";
    setRowChunkLaunch(l, t);
    l.args = {{Kind::Operand, 0, 1, "x"},
              {Kind::Operand, 1, 1, "mask"},
              {Kind::Operand, 2, 1, "dy"},
              {Kind::Result, 0, 1, "dx"},
              {Kind::Scratch, 0, 1, "partials"}};
    if (dense)
      l.args.push_back({Kind::Extent, 1, groups, "active"});

    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, mk.getInput());
    emitRowChunkConstants(os, t);
    emitMaskConstants(os, block, entries, groups);
    os << "constexpr long long kW = " << width << ";\n\n" << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kPerGroup;\n";
    os << kRowChunkStart << R"(  T mv[kCPT], acc[kCPT];
  bool on[kCPT];
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads, i = c / kBlock;
    on[k] = c < kW && i % kPerGroup < active;
    mv[k] = on[k] ? mask[i] : T(0);
    acc[k] = T(0);
  }
  for (long long r = r0; r < r1; ++r)
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      if (c < kW) {
        const long long e = r * kW + c;
        const T g = dy[e];
        dx[e] = g * mv[k];
        if (on[k])
          acc[k] += g * x[e];
      }
    }
  T *part = static_cast<T *>(partials) + (long long)blockIdx.x * kW;
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
    if (c < kW)
      part[c] = acc[k];
  }
}
)";
    std::vector<Launch> launches = {l};
    std::vector<int64_t> scratch = {t.blocks * width * bytes};
    if (block == 1) {
      launches.push_back(emitColumnSum(os, op, "mask_grad_columns", t.blocks, width,
                                       {{Kind::Result, 1, 1, "dm"}},
                                       "    dm[j] = total;\n"
                                       "    if (j == 0)\n"
                                       "      dm[kEntries] = dm[kEntries + 1] = T(0);\n"));
    } else {
      launches.push_back(emitColumnSum(os, op, "mask_grad_columns", t.blocks, width,
                                       {{Kind::Scratch, 1, 1, "columns"}},
                                       "    static_cast<T *>(columns)[j] = total;\n"));
      Launch e;
      e.entry = "mask_grad_entries";
      e.args = {{Kind::Scratch, 1, 1, "columns"}, {Kind::Result, 1, 1, "dm"}};
      flatLaunch(e, entries + 2);
      os << "\n"
         << entrySignature(op, e) << " {\n"
         << R"(  const T *s = static_cast<const T *>(columns);
  for (long long i : nestor::gridStride(kEntries + 2)) {
    T total = 0;
    if (i < kEntries)
      for (long long c = 0; c < kBlock; ++c)
        total += s[i * kBlock + c];
    dm[i] = total;
  }
}
)";
      launches.push_back(e);
      scratch.push_back(width * bytes);
    }
    return finish(out, "mask_grad", std::move(launches), std::move(scratch));
  }
};

//===----------------------------------------------------------------------===//
// Squared ReLU
//===----------------------------------------------------------------------===//

/// a = relu(u * m)^2 over the active prefix, 0 past it. Elementwise.
struct Relu2Emitter
    : public kernel::CudaEmitOpInterface::ExternalModel<Relu2Emitter, kernel::Relu2Op> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto relu = cast<kernel::Relu2Op>(op);
    auto [rows, f] = rowsAndWidth(relu.getInput());
    bool masked = static_cast<bool>(relu.getMask());
    bool dense = masked && relu.getPrefixDense();
    int64_t pack = rowPackOf(relu.getInput(), f);
    Flat fl;
    fl.launch.entry = "relu2_forward";
    fl.launch.args = {{Kind::Operand, 0, 1, "u"}};
    if (masked)
      fl.launch.args.push_back({Kind::Operand, 1, 1, "mask"});
    fl.launch.args.push_back({Kind::Result, 0, 1, "a"});
    if (dense)
      fl.launch.args.push_back({Kind::Extent, 1, 1, "active"});
    fl.width = f;
    fl.loads = {{"x", "u"}};
    fl.stores = {{"a", "o"}};
    if (!dense)
      fl.setup = "  const long long active = kW;\n";
    fl.lane = std::string("      T v = T(0);\n"
                          "      if (c < active) {\n"
                          "        v = x.v[j]") +
              (masked ? " * mask[c]" : "") +
              ";\n"
              "        v = v < T(0) ? T(0) : v;\n"
              "        v = v * v;\n"
              "      }\n"
              "      o.v[j] = v;\n";
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, relu.getInput(), pack);
    emitFlat(os, op, fl, rows * f, pack);
    return finish(out, "relu2", {fl.launch});
  }
};

/// du = dA * 2 relu(u m) * m (elementwise when there is no mask cotangent); with one, row
/// chunks write column partials of dA * 2 relu(u m) * u, summed by a second launch.
struct Relu2GradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<Relu2GradEmitter, kernel::Relu2GradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto relu = cast<kernel::Relu2GradOp>(op);
    auto [rows, f] = rowsAndWidth(relu.getInput());
    bool masked = static_cast<bool>(relu.getMask());
    bool dense = masked && relu.getPrefixDense();
    bool dMask = static_cast<bool>(relu.getMaskGrad());
    std::string m = masked ? "mask[c]" : "T(1)";
    llvm::raw_string_ostream os(out.source);
    if (!dMask) {
      int64_t pack = rowPackOf(relu.getInput(), f);
      Flat fl;
      fl.launch.entry = "relu2_grad";
      fl.launch.args = {{Kind::Operand, 0, 1, "u"}, {Kind::Operand, 1, 1, "dA"}};
      if (masked)
        fl.launch.args.push_back({Kind::Operand, 2, 1, "mask"});
      fl.launch.args.push_back({Kind::Result, 0, 1, "du"});
      if (dense)
        fl.launch.args.push_back({Kind::Extent, 2, 1, "active"});
      fl.width = f;
      fl.loads = {{"x", "u"}, {"g", "dA"}};
      fl.stores = {{"du", "o"}};
      if (!dense)
        fl.setup = "  const long long active = kW;\n";
      fl.lane = "      T d = T(0);\n"
                "      if (c < active) {\n"
                "        const T m = " +
                m +
                ";\n"
                "        T v = x.v[j] * m;\n"
                "        v = v < T(0) ? T(0) : v;\n"
                "        d = g.v[j] * T(2) * v * m;\n"
                "      }\n"
                "      o.v[j] = d;\n";
      emitTypes(os, op, relu.getInput(), pack);
      emitFlat(os, op, fl, rows * f, pack);
      return finish(out, "relu2_grad", {fl.launch});
    }

    RowChunks t = rowChunks(rows, f, /*wholeRows=*/false);
    Launch l;
    l.entry = "relu2_grad_rows";
    setRowChunkLaunch(l, t);
    l.args = {{Kind::Operand, 0, 1, "u"}, {Kind::Operand, 1, 1, "dA"}};
    if (masked)
      l.args.push_back({Kind::Operand, 2, 1, "mask"});
    l.args.push_back({Kind::Result, 0, 1, "du"});
    l.args.push_back({Kind::Scratch, 0, 1, "partials"});
    if (dense)
      l.args.push_back({Kind::Extent, 2, 1, "active"});
    emitTypes(os, op, relu.getInput());
    emitRowChunkConstants(os, t);
    os << "constexpr long long kW = " << f << ";\n\n" << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long active = kW;\n";
    os << kRowChunkStart << R"(  T mv[kCPT], acc[kCPT];
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
)"
       << "    mv[k] = c < active ? " << m << R"( : T(0);
    acc[k] = T(0);
  }
  for (long long r = r0; r < r1; ++r)
#pragma unroll
    for (int k = 0; k < kCPT; ++k) {
      const long long c = cBase + threadIdx.x + (long long)k * kThreads;
      const long long e = r * kW + c;
      if (c < active) {
        const T x = u[e];
        T v = x * mv[k];
        v = v < T(0) ? T(0) : v;
        const T s = dA[e] * T(2) * v;
        du[e] = s * mv[k];
        acc[k] += s * x;
      } else if (c < kW) {
        du[e] = T(0);
      }
    }
  T *part = static_cast<T *>(partials) + (long long)blockIdx.x * kW;
#pragma unroll
  for (int k = 0; k < kCPT; ++k) {
    const long long c = cBase + threadIdx.x + (long long)k * kThreads;
    if (c < kW)
      part[c] = acc[k];
  }
}
)";
    Launch sum =
        emitColumnSum(os, op, "relu2_grad_columns", t.blocks, f, {{Kind::Result, 1, 1, "dm"}},
                      "    dm[j] = total;\n"
                      "    if (j == 0)\n"
                      "      dm[kW] = dm[kW + 1] = T(0);\n");
    int64_t bytes = isF64(relu.getInput()) ? 8 : 4;
    return finish(out, "relu2_grad", {l, sum}, {t.blocks * f * bytes});
  }
};

//===----------------------------------------------------------------------===//
// Depth gate, add, mul
//===----------------------------------------------------------------------===//

LogicalResult checkLayer(Operation *op, Value keep, int64_t layer) {
  if (keep && (layer < 0 || layer >= numElements(keep)))
    return op->emitOpError("CUDA depth gate: layer ")
           << layer << " is outside keep's " << numElements(keep) << " entries";
  return success();
}

/// out = h + gamma * block with gamma = keep[layer] (1 without keep). Elementwise.
struct DepthGateEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<DepthGateEmitter, kernel::DepthGateOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto gate = cast<kernel::DepthGateOp>(op);
    int64_t layer = gate.getLayer().value_or(0), n = numElements(gate.getResult());
    if (failed(checkLayer(op, gate.getKeep(), layer)))
      return failure();
    Flat f;
    f.launch.entry = "depth_gate_forward";
    f.launch.args = {{Kind::Operand, 0, 1, "h"}, {Kind::Operand, 1, 1, "block"}};
    if (gate.getKeep())
      f.launch.args.push_back({Kind::Operand, 2, 1, "keep"});
    f.launch.args.push_back({Kind::Result, 0, 1, "out"});
    f.loads = {{"a", "h"}, {"b", "block"}};
    f.stores = {{"out", "o"}};
    f.setup = gate.getKeep() ? "  const T gamma = keep[" + std::to_string(layer) + "];\n"
                             : "  const T gamma = T(1);\n";
    f.lane = "      o.v[j] = a.v[j] + gamma * b.v[j];\n";
    int64_t pack = packOf(gate.getResult());
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, gate.getResult(), pack);
    emitFlat(os, op, f, n, pack);
    return finish(out, "depth_gate", {f.launch});
  }
};

/// dBlock = gamma * dy; with keep_grad, each block's sum of dy * block (its threads' packs in
/// grid-stride order, then a block reduction) goes to partials[blockIdx.x], and one block sums
/// the partials in order into keep_grad[layer] (the other entries 0).
struct DepthGateGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<DepthGateGradEmitter,
                                                        kernel::DepthGateGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto gate = cast<kernel::DepthGateGradOp>(op);
    int64_t layer = gate.getLayer().value_or(0), n = numElements(gate.getBlock());
    if (failed(checkLayer(op, gate.getKeep(), layer)))
      return failure();
    bool dKeep = static_cast<bool>(gate.getKeepGrad());
    if (dKeep && (layer < 0 || layer >= numElements(gate.getKeepGrad())))
      return op->emitOpError("CUDA depth gate: layer ")
             << layer << " is outside keep_grad's " << numElements(gate.getKeepGrad())
             << " entries";
    Flat f;
    f.launch.entry = "depth_gate_grad_block";
    f.launch.args = {{Kind::Operand, 0, 1, "block"}, {Kind::Operand, 1, 1, "dy"}};
    if (gate.getKeep())
      f.launch.args.push_back({Kind::Operand, 2, 1, "keep"});
    f.launch.args.push_back({Kind::Result, 0, 1, "dblock"});
    if (dKeep)
      f.launch.args.push_back({Kind::Scratch, 0, 1, "partials"});
    f.loads = {{"b", "block"}, {"g", "dy"}};
    f.stores = {{"dblock", "o"}};
    f.setup = gate.getKeep() ? "  const T gamma = keep[" + std::to_string(layer) + "];\n"
                             : "  const T gamma = T(1);\n";
    f.lane = "      o.v[j] = gamma * g.v[j];\n";
    if (dKeep) {
      f.setup += "  T acc = 0;\n";
      f.lane += "      acc += g.v[j] * b.v[j];\n";
      f.after = "  __shared__ T red[32];\n"
                "  acc = nestor::blockSum(acc, red);\n"
                "  if (threadIdx.x == 0)\n"
                "    static_cast<T *>(partials)[blockIdx.x] = acc;\n";
    }
    int64_t pack = packOf(gate.getBlock());
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, gate.getBlock(), pack);
    emitFlat(os, op, f, n, pack, /*maxBlocks=*/1024);
    std::vector<Launch> launches = {f.launch};
    std::vector<int64_t> scratch;
    if (dKeep) {
      int64_t parts = f.launch.grid.x;
      Launch k;
      k.entry = "depth_gate_grad_keep";
      k.block.x = blockFor(parts, 256);
      k.args = {{Kind::Scratch, 0, 1, "partials"}, {Kind::Result, 1, 1, "dkeep"}};
      os << "\nconstexpr int kParts = " << parts << ";\n"
         << "constexpr long long kLayers = " << numElements(gate.getKeepGrad()) << ";\n"
         << "constexpr long long kLayer = " << layer << ";\n"
         << entrySignature(op, k) << " {\n"
         << R"(  __shared__ T red[32];
  const T *parts = static_cast<const T *>(partials);
  T acc = 0;
  for (int b = threadIdx.x; b < kParts; b += blockDim.x)
    acc += parts[b];
  acc = nestor::blockSum(acc, red);
  for (long long i = threadIdx.x; i < kLayers; i += blockDim.x)
    dkeep[i] = i == kLayer ? acc : T(0);
}
)";
      launches.push_back(k);
      scratch.push_back(parts * (isF64(gate.getBlock()) ? 8 : 4));
    }
    return finish(out, "depth_gate_grad", std::move(launches), std::move(scratch));
  }
};

/// out = ((in0 + in1) + in2) + ... in one pass (the CPU's order). Elementwise.
struct AddEmitter : public kernel::CudaEmitOpInterface::ExternalModel<AddEmitter, kernel::AddOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto add = cast<kernel::AddOp>(op);
    size_t inputs = add.getInputs().size();
    Flat f;
    f.launch.entry = "add_forward";
    std::string sum;
    for (size_t i = 0; i < inputs; ++i) {
      std::string name = "in" + std::to_string(i), local = "a" + std::to_string(i);
      f.launch.args.push_back({Kind::Operand, static_cast<unsigned>(i), 1, name});
      f.loads.push_back({local, name});
      sum = i == 0 ? local + ".v[j]" : "(" + sum + " + " + local + ".v[j])";
    }
    f.launch.args.push_back({Kind::Result, 0, 1, "out"});
    f.stores = {{"out", "o"}};
    f.lane = "      o.v[j] = " + sum + ";\n";
    int64_t pack = packOf(add.getResult());
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, add.getResult(), pack);
    emitFlat(os, op, f, numElements(add.getResult()), pack);
    return finish(out, "add", {f.launch});
  }
};

/// out = lhs * rhs. Elementwise.
struct MulEmitter : public kernel::CudaEmitOpInterface::ExternalModel<MulEmitter, kernel::MulOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto mul = cast<kernel::MulOp>(op);
    Flat f;
    f.launch.entry = "mul_forward";
    f.launch.args = {
        {Kind::Operand, 0, 1, "lhs"}, {Kind::Operand, 1, 1, "rhs"}, {Kind::Result, 0, 1, "out"}};
    f.loads = {{"a", "lhs"}, {"b", "rhs"}};
    f.stores = {{"out", "o"}};
    f.lane = "      o.v[j] = a.v[j] * b.v[j];\n";
    int64_t pack = packOf(mul.getResult());
    llvm::raw_string_ostream os(out.source);
    emitTypes(os, op, mul.getResult(), pack);
    emitFlat(os, op, f, numElements(mul.getResult()), pack);
    return finish(out, "mul", {f.launch});
  }
};

} // namespace

void nestor::cuda::registerRowEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::RMSNormOp::attachInterface<RMSNormEmitter>(*ctx);
    kernel::RMSNormGradOp::attachInterface<RMSNormGradEmitter>(*ctx);
    kernel::EmbedOp::attachInterface<EmbedEmitter>(*ctx);
    kernel::EmbedGradOp::attachInterface<EmbedGradEmitter>(*ctx);
    kernel::MaskOp::attachInterface<MaskEmitter>(*ctx);
    kernel::MaskGradOp::attachInterface<MaskGradEmitter>(*ctx);
    kernel::Relu2Op::attachInterface<Relu2Emitter>(*ctx);
    kernel::Relu2GradOp::attachInterface<Relu2GradEmitter>(*ctx);
    kernel::DepthGateOp::attachInterface<DepthGateEmitter>(*ctx);
    kernel::DepthGateGradOp::attachInterface<DepthGateGradEmitter>(*ctx);
    kernel::AddOp::attachInterface<AddEmitter>(*ctx);
    kernel::MulOp::attachInterface<MulEmitter>(*ctx);
  });
}
