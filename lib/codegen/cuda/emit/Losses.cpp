//===- Losses.cpp - CUDA emitters of the loss kernels ----------------------===//
//
// Softmax cross-entropy and forward KL, forward and backward. Semantics: lib/codegen/cpu/
// Kernels.h (crossEntropyForward/Backward, klForward/Backward). One thread block per row of the
// vocabulary: each thread keeps a running (max, sum of exp(x - max)) over its block-stride share
// of the row, and the block combines them into the row's log-sum-exp (max-subtracted, as the
// CPU's logSumExp). The forward losses reduce over rows deterministically: each row's loss goes
// to a scratch buffer, and a second launch of one block sums them in a fixed order.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

#include <limits>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

/// The element type `T` the kernel computes in (the logits'), the scalar type `R` of the loss
/// (or of its cotangent), the sizes, and the device helpers the loss kernels share: float and
/// double math, the block maximum, and the running and block-wide log-sum-exp.
void writeCommon(raw_ostream &os, Operation *op, Value logits, Value scalar, int64_t rows,
                 int64_t vocab) {
  os << prelude(op);
  os << "typedef " << elementName(logits) << " T;\n";
  os << "typedef " << elementName(scalar) << " R;\n";
  os << "constexpr long long kRows = " << rows << ";\n";
  os << "constexpr long long kV = " << vocab << ";\n";
  os << R"(
__device__ __forceinline__ float lossExp(float x) { return expf(x); }
__device__ __forceinline__ double lossExp(double x) { return exp(x); }
__device__ __forceinline__ float lossLog(float x) { return logf(x); }
__device__ __forceinline__ double lossLog(double x) { return log(x); }
__device__ __forceinline__ float lossNegInf(float) { return nestor::negativeInfinity(); }
__device__ __forceinline__ double lossNegInf(double) {
  return __longlong_as_double((long long)0xfff0000000000000ull);
}
__device__ __forceinline__ float lossNaN(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double lossNaN(double) {
  return __longlong_as_double((long long)0x7ff8000000000000ull);
}

/// The maximum over the block (every thread calls it and gets it); -infinity is the identity.
__device__ __forceinline__ T lossBlockMax(T value, T *red) {
  const int lane = threadIdx.x % nestor::kWarpSize;
  const int warp = threadIdx.x / nestor::kWarpSize;
  const int warps = blockDim.x / nestor::kWarpSize;
  value = nestor::warpMax(value);
  __syncthreads(); // a previous reduction may still be reading red
  if (lane == 0)
    red[warp] = value;
  __syncthreads();
  value = lane < warps ? red[lane] : lossNegInf(T());
  return nestor::warpMax(value);
}

/// Adds y to a thread's running log-sum-exp: m the largest value seen, s = sum exp(. - m).
/// -infinity adds nothing (exp(-inf) = 0); NaN makes s NaN.
__device__ __forceinline__ void lseAdd(T &m, T &s, T y) {
  if (y > m) {
    s = s * lossExp(m - y) + T(1);
    m = y;
  } else if (y != lossNegInf(T())) {
    s += lossExp(y - m);
  }
}

/// log sum exp over the block from each thread's running (m, s); every thread gets it.
__device__ __forceinline__ T blockLogSumExp(T m, T s, T *red) {
  const T big = lossBlockMax(m, red);
  const T part = s == T(0) ? T(0) : s * lossExp(m - big);
  return big + lossLog(nestor::blockSum(part, red));
}

)";
}

/// A C++ literal of the signed 64-bit value `bits` (I64Attr getters return it unsigned).
std::string int64Literal(uint64_t bits) {
  int64_t v = static_cast<int64_t>(bits);
  if (v == std::numeric_limits<int64_t>::min())
    return "(-9223372036854775807ll - 1)";
  return std::to_string(v) + "ll";
}

/// Bytes per element of `v`'s element type.
int64_t elementBytes(Value v) {
  return cast<ShapedType>(v.getType()).getElementType().getIntOrFloatBitWidth() / 8;
}

/// The rows and vocabulary of a loss over `logits`, checking the tokens (if any) match.
LogicalResult lossShape(Operation *op, Value logits, Value targets, int64_t &rows, int64_t &vocab) {
  auto [r, v] = rowsAndWidth(logits);
  rows = r;
  vocab = v;
  if (rows <= 0 || vocab <= 0)
    return op->emitOpError("CUDA emitter: empty logits (rows ")
           << rows << ", vocabulary " << vocab << ")";
  if (targets && numElements(targets) != rows)
    return op->emitOpError("CUDA emitter: ")
           << numElements(targets) << " targets for " << rows << " rows";
  return success();
}

/// The per-row kernels' launch: one block per row over the vocabulary.
Launch rowLaunch(const char *entry, int64_t rows, int64_t vocab) {
  Launch l;
  l.entry = entry;
  l.grid.x = rows;
  l.block.x = blockFor(vocab);
  return l;
}

/// One block over the rows (the fixed-order reductions over rows).
Launch singleBlockLaunch(const char *entry, int64_t rows) {
  Launch l;
  l.entry = entry;
  l.grid.x = 1;
  l.block.x = blockFor(rows);
  return l;
}

/// Mean over non-ignored rows of lse(row) - row[target]. Launch 1 (a block per row) writes each
/// row's loss (0 when ignored) to scratch; launch 2 (one block) sums them in a fixed order and
/// divides by the count (0 when every row is ignored). Targets outside [0, vocab) that are not
/// ignore_index give NaN (the CPU reads out of bounds there).
struct CrossEntropyEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<CrossEntropyEmitter,
                                                        kernel::CrossEntropyOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto ce = cast<kernel::CrossEntropyOp>(op);
    int64_t rows, vocab;
    if (failed(lossShape(op, ce.getLogits(), ce.getTargets(), rows, vocab)))
      return failure();
    Launch perRow = rowLaunch("cross_entropy_rows", rows, vocab);
    perRow.args = {{Kind::Operand, 0, 1, "logits"},
                   {Kind::Operand, 1, 1, "targets"},
                   {Kind::Scratch, 0, 1, "scratch"}};
    Launch mean = singleBlockLaunch("cross_entropy_mean", rows);
    mean.args = {{Kind::Operand, 1, 1, "targets"},
                 {Kind::Result, 0, 1, "result"},
                 {Kind::Scratch, 0, 1, "scratch"}};

    llvm::raw_string_ostream os(out.source);
    writeCommon(os, op, ce.getLogits(), ce.getResult(), rows, vocab);
    os << "constexpr long long kIgnore = " << int64Literal(ce.getIgnoreIndex()) << ";\n\n";
    os << "// Each row's loss, 0 where ignored.\n"
       << entrySignature(op, perRow) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  const long long row = blockIdx.x;\n"
       << "  T *loss = static_cast<T *>(scratch);\n"
       << "  const long long target = targets[row];\n"
       << "  if (target == kIgnore) { // the whole block leaves: no reduction is skipped\n"
       << "    if (threadIdx.x == 0)\n"
       << "      loss[row] = T(0);\n"
       << "    return;\n"
       << "  }\n"
       << "  const T *x = logits + row * kV;\n"
       << "  T m = lossNegInf(T()), s = T(0);\n"
       << "  for (long long c : nestor::blockStride(kV))\n"
       << "    lseAdd(m, s, x[c]);\n"
       << "  const T lse = blockLogSumExp(m, s, red);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    loss[row] = target >= 0 && target < kV ? lse - x[target] : lossNaN(T());\n"
       << "}\n\n";
    os << "// The mean over non-ignored rows, summed in a fixed order.\n"
       << entrySignature(op, mean) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  __shared__ long long redCount[32];\n"
       << "  const T *loss = static_cast<const T *>(scratch);\n"
       << "  T sum = T(0);\n"
       << "  long long count = 0;\n"
       << "  for (long long r : nestor::blockStride(kRows))\n"
       << "    if (targets[r] != kIgnore) {\n"
       << "      sum += loss[r];\n"
       << "      ++count;\n"
       << "    }\n"
       << "  sum = nestor::blockSum(sum, red);\n"
       << "  count = nestor::blockSum(count, redCount);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    *result = count ? R(sum / T(count)) : R(0);\n"
       << "}\n";
    out.kind = "cross_entropy";
    out.scratchBytes = {rows * elementBytes(ce.getLogits())};
    out.launches.push_back(std::move(perRow));
    out.launches.push_back(std::move(mean));
    return success();
  }
};

/// dLogits = dLoss / count * (softmax - onehot(target)), 0 on ignored rows. Launch 1 (one
/// block) counts the non-ignored rows into scratch; launch 2 (a block per row) writes the row.
/// A target outside [0, vocab) that is not ignore_index makes its row NaN.
struct CrossEntropyGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<CrossEntropyGradEmitter,
                                                        kernel::CrossEntropyGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto ce = cast<kernel::CrossEntropyGradOp>(op);
    int64_t rows, vocab;
    if (failed(lossShape(op, ce.getLogits(), ce.getTargets(), rows, vocab)))
      return failure();
    Launch count = singleBlockLaunch("cross_entropy_count", rows);
    count.args = {{Kind::Operand, 1, 1, "targets"}, {Kind::Scratch, 0, 1, "scratch"}};
    Launch backward = rowLaunch("cross_entropy_backward", rows, vocab);
    backward.args = {{Kind::Operand, 0, 1, "logits"},
                     {Kind::Operand, 1, 1, "targets"},
                     {Kind::Operand, 2, 1, "result_grad"},
                     {Kind::Result, 0, 1, "logits_grad"},
                     {Kind::Scratch, 0, 1, "scratch"}};

    llvm::raw_string_ostream os(out.source);
    writeCommon(os, op, ce.getLogits(), ce.getResultGrad(), rows, vocab);
    os << "constexpr long long kIgnore = " << int64Literal(ce.getIgnoreIndex()) << ";\n\n";
    os << "// The number of non-ignored rows.\n"
       << entrySignature(op, count) << " {\n"
       << "  __shared__ long long red[32];\n"
       << "  long long n = 0;\n"
       << "  for (long long r : nestor::blockStride(kRows))\n"
       << "    n += targets[r] != kIgnore;\n"
       << "  n = nestor::blockSum(n, red);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    *static_cast<long long *>(scratch) = n;\n"
       << "}\n\n";
    os << entrySignature(op, backward) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  const long long row = blockIdx.x;\n"
       << "  const long long target = targets[row];\n"
       << "  T *g = logits_grad + row * kV;\n"
       << "  if (target == kIgnore) { // the whole block leaves: no reduction is skipped\n"
       << "    for (long long c : nestor::blockStride(kV))\n"
       << "      g[c] = T(0);\n"
       << "    return;\n"
       << "  }\n"
       << "  const T *x = logits + row * kV;\n"
       << "  T m = lossNegInf(T()), s = T(0);\n"
       << "  for (long long c : nestor::blockStride(kV))\n"
       << "    lseAdd(m, s, x[c]);\n"
       << "  const T lse = blockLogSumExp(m, s, red);\n"
       << "  const long long count = *static_cast<const long long *>(scratch);\n"
       << "  const T scale = T(*result_grad) / T(count);\n"
       << "  if (target >= 0 && target < kV) {\n"
       << "    for (long long c : nestor::blockStride(kV))\n"
       << "      g[c] = scale * lossExp(x[c] - lse) - (c == target ? scale : T(0));\n"
       << "  } else {\n"
       << "    for (long long c : nestor::blockStride(kV))\n"
       << "      g[c] = lossNaN(T());\n"
       << "  }\n"
       << "}\n";
    out.kind = "cross_entropy_grad";
    out.scratchBytes = {static_cast<int64_t>(sizeof(long long))};
    out.launches.push_back(std::move(count));
    out.launches.push_back(std::move(backward));
    return success();
  }
};

/// The temperature constants of the KL kernels (1 / temperature rounded in T, as on the CPU).
void writeTemperature(raw_ostream &os, double temperature) {
  os << "constexpr T kTemp = T(" << doubleLiteral(temperature) << ");\n";
  os << "constexpr T kInvTemp = T(1) / kTemp;\n\n";
}

/// Both rows' log-sum-exps at the temperature (student: lseS, teacher: lseT).
constexpr const char *kTwoLogSumExps =
    "  T mS = lossNegInf(T()), sS = T(0), mT = lossNegInf(T()), sT = T(0);\n"
    "  for (long long c : nestor::blockStride(kV)) {\n"
    "    lseAdd(mS, sS, s[c] * kInvTemp);\n"
    "    lseAdd(mT, sT, t[c] * kInvTemp);\n"
    "  }\n"
    "  const T lseS = blockLogSumExp(mS, sS, red);\n"
    "  const T lseT = blockLogSumExp(mT, sT, red);\n";

/// Mean over rows of sum_v p_T (log p_T - log p_S) at the temperature. Launch 1 (a block per
/// row: a pass for both log-sum-exps, a second for the sum) writes each row's KL to scratch;
/// launch 2 (one block) sums them in a fixed order.
struct KLEmitter : public kernel::CudaEmitOpInterface::ExternalModel<KLEmitter, kernel::KLOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto kl = cast<kernel::KLOp>(op);
    int64_t rows, vocab;
    if (failed(lossShape(op, kl.getStudent(), Value(), rows, vocab)))
      return failure();
    Launch perRow = rowLaunch("kl_rows", rows, vocab);
    perRow.args = {{Kind::Operand, 0, 1, "student"},
                   {Kind::Operand, 1, 1, "teacher"},
                   {Kind::Scratch, 0, 1, "scratch"}};
    Launch mean = singleBlockLaunch("kl_mean", rows);
    mean.args = {{Kind::Result, 0, 1, "result"}, {Kind::Scratch, 0, 1, "scratch"}};

    llvm::raw_string_ostream os(out.source);
    writeCommon(os, op, kl.getStudent(), kl.getResult(), rows, vocab);
    writeTemperature(os, kl.getTemperature().convertToDouble());
    os << "// Each row's KL.\n"
       << entrySignature(op, perRow) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  const long long row = blockIdx.x;\n"
       << "  const T *s = student + row * kV, *t = teacher + row * kV;\n"
       << kTwoLogSumExps << "  T acc = T(0);\n"
       << "  for (long long c : nestor::blockStride(kV)) {\n"
       << "    const T lt = t[c] * kInvTemp - lseT, ls = s[c] * kInvTemp - lseS;\n"
       << "    acc += lossExp(lt) * (lt - ls);\n"
       << "  }\n"
       << "  acc = nestor::blockSum(acc, red);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    static_cast<T *>(scratch)[row] = acc;\n"
       << "}\n\n";
    os << "// The mean over rows, summed in a fixed order.\n"
       << entrySignature(op, mean) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  const T *kl = static_cast<const T *>(scratch);\n"
       << "  T sum = T(0);\n"
       << "  for (long long r : nestor::blockStride(kRows))\n"
       << "    sum += kl[r];\n"
       << "  sum = nestor::blockSum(sum, red);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    *result = R(sum / T(kRows));\n"
       << "}\n";
    out.kind = "kl";
    out.scratchBytes = {rows * elementBytes(kl.getStudent())};
    out.launches.push_back(std::move(perRow));
    out.launches.push_back(std::move(mean));
    return success();
  }
};

/// dStudent = dLoss / (rows * temperature) * (p_S - p_T): a block per row, one pass for both
/// log-sum-exps and one writing the row.
struct KLGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<KLGradEmitter, kernel::KLGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto kl = cast<kernel::KLGradOp>(op);
    int64_t rows, vocab;
    if (failed(lossShape(op, kl.getStudent(), Value(), rows, vocab)))
      return failure();
    Launch backward = rowLaunch("kl_backward", rows, vocab);
    backward.args = {{Kind::Operand, 0, 1, "student"},
                     {Kind::Operand, 1, 1, "teacher"},
                     {Kind::Operand, 2, 1, "result_grad"},
                     {Kind::Result, 0, 1, "student_grad"}};

    llvm::raw_string_ostream os(out.source);
    writeCommon(os, op, kl.getStudent(), kl.getResultGrad(), rows, vocab);
    writeTemperature(os, kl.getTemperature().convertToDouble());
    os << entrySignature(op, backward) << " {\n"
       << "  __shared__ T red[32];\n"
       << "  const long long row = blockIdx.x;\n"
       << "  const T *s = student + row * kV, *t = teacher + row * kV;\n"
       << kTwoLogSumExps << "  const T scale = T(*result_grad) / (T(kRows) * kTemp);\n"
       << "  T *g = student_grad + row * kV;\n"
       << "  for (long long c : nestor::blockStride(kV))\n"
       << "    g[c] = scale * (lossExp(s[c] * kInvTemp - lseS) -\n"
       << "                    lossExp(t[c] * kInvTemp - lseT));\n"
       << "}\n";
    out.kind = "kl_grad";
    out.launches.push_back(std::move(backward));
    return success();
  }
};

} // namespace

void nestor::cuda::registerLossEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::CrossEntropyOp::attachInterface<CrossEntropyEmitter>(*ctx);
    kernel::CrossEntropyGradOp::attachInterface<CrossEntropyGradEmitter>(*ctx);
    kernel::KLOp::attachInterface<KLEmitter>(*ctx);
    kernel::KLGradOp::attachInterface<KLGradEmitter>(*ctx);
  });
}
