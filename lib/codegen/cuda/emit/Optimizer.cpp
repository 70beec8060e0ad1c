//===- Optimizer.cpp - CUDA emitters of the optimizer kernels --------------===//
//
// The squared global gradient norm (float64, deterministic: fixed chunks, each summed by one
// block, then the chunks' sums added in order by one block) and the AdamW step (elementwise,
// updating the parameter and its moments in place through their operand buffers).
// Semantics: lib/codegen/cpu/Kernels.h (adamw) and runtime/Executor.cpp (squared_norm).
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

/// Elements each block of the squared norm's first pass sums (256 threads, 128 each).
constexpr int64_t kNormChunk = 32768;
constexpr int64_t kNormThreads = 256;
/// Inputs per first-pass launch: bounds the entry's parameter space (8 bytes a pointer; 4 KiB
/// is the limit before sm_90 with CUDA 12.1).
constexpr size_t kNormInputsPerLaunch = 64;

/// sum over every input of sum_i double(x_i)^2. The inputs' elements are cut into chunks of
/// kNormChunk (per input, in order); launch "squared_norm_chunks_<g>" (for inputs g*64 ..) runs
/// one block per chunk of its inputs, writing the chunk's sum (a block-stride loop and a block
/// reduction: a fixed order) to scratch slot [chunk]; "squared_norm_total" (one block) sums the
/// slots in a fixed order and writes the result. No atomics: the same bits on every run.
struct SquaredNormEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<SquaredNormEmitter, kernel::SquaredNormOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto sq = cast<kernel::SquaredNormOp>(op);
    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    os << "constexpr long long kChunk = " << kNormChunk << ";\n\n";
    os << R"(/// The sum of squares (in double) of chunk `chunk` of the n elements at x.
template <typename T>
__device__ __forceinline__ double chunkSquares(const T *__restrict__ x, long long n,
                                               long long chunk) {
  const long long begin = chunk * kChunk;
  const long long end = n - begin < kChunk ? n : begin + kChunk;
  double acc = 0.0;
  for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double v = static_cast<double>(x[i]);
    acc += v * v;
  }
  return acc;
}

)";
    // Each input's first chunk (global over all inputs) and chunk count.
    std::vector<int64_t> first, chunks;
    int64_t total = 0;
    for (Value v : sq.getInputs()) {
      int64_t n = numElements(v);
      first.push_back(total);
      chunks.push_back((n + kNormChunk - 1) / kNormChunk);
      total += chunks.back();
    }
    size_t inputs = sq.getInputs().size();
    for (size_t g = 0; g * kNormInputsPerLaunch < inputs; ++g) {
      size_t lo = g * kNormInputsPerLaunch, hi = std::min(inputs, lo + kNormInputsPerLaunch);
      int64_t groupFirst = first[lo], groupChunks = 0;
      for (size_t i = lo; i < hi; ++i)
        groupChunks += chunks[i];
      if (groupChunks == 0) // only empty tensors
        continue;
      Launch l;
      l.entry = "squared_norm_chunks_" + std::to_string(g);
      l.grid.x = groupChunks;
      l.block.x = kNormThreads;
      for (size_t i = lo; i < hi; ++i)
        l.args.push_back({Kind::Operand, static_cast<unsigned>(i), 1, "in" + std::to_string(i)});
      l.args.push_back({Kind::Scratch, 0, 1, "scratch"});
      os << entrySignature(op, l) << " {\n"
         << "  __shared__ double red[32];\n"
         << "  const long long chunk = " << groupFirst << "ll + blockIdx.x;\n"
         << "  double acc = 0.0;\n";
      // The chunk's input: uniform over the block, so the reduction below is reached by all.
      const char *keyword = "if";
      for (size_t i = lo; i < hi; ++i) {
        if (chunks[i] == 0)
          continue;
        os << "  " << keyword << " (chunk < " << first[i] + chunks[i] << "ll)\n"
           << "    acc = chunkSquares(in" << i << ", " << numElements(sq.getInputs()[i])
           << "ll, chunk - " << first[i] << "ll);\n";
        keyword = "else if";
      }
      os << "  acc = nestor::blockSum(acc, red);\n"
         << "  if (threadIdx.x == 0)\n"
         << "    static_cast<double *>(scratch)[chunk] = acc;\n"
         << "}\n\n";
      out.launches.push_back(std::move(l));
    }
    Launch sum;
    sum.entry = "squared_norm_total";
    sum.grid.x = 1;
    sum.block.x = kNormThreads;
    sum.args = {{Kind::Result, 0, 1, "result"}, {Kind::Scratch, 0, 1, "scratch"}};
    os << "// The chunks' sums in a fixed order.\n"
       << entrySignature(op, sum) << " {\n"
       << "  __shared__ double red[32];\n"
       << "  const double *parts = static_cast<const double *>(scratch);\n"
       << "  double acc = 0.0;\n"
       << "  for (long long c : nestor::blockStride(" << total << "ll))\n"
       << "    acc += parts[c];\n"
       << "  acc = nestor::blockSum(acc, red);\n"
       << "  if (threadIdx.x == 0)\n"
       << "    *result = acc;\n"
       << "}\n";
    out.launches.push_back(std::move(sum));
    out.kind = "squared_norm";
    out.scratchBytes = {std::max<int64_t>(total, 1) * static_cast<int64_t>(sizeof(double))};
    return success();
  }
};

/// Blocks of the AdamW grid-stride loop: at most kAdamWBlocks of 256 threads.
constexpr int64_t kAdamWThreads = 256;
constexpr int64_t kAdamWBlocks = 4096;

/// m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; p -= lr (m c1 / (sqrt(v c2) + eps) + wd p),
/// g' = grad_scale g, c_k = 1 / (1 - b_k^t), with hyper = [lr, t, grad_scale] read on the
/// device. One grid-stride loop over the n elements; param, exp_avg and exp_avg_sq are written
/// through their (writable) operand buffers.
struct AdamWEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<AdamWEmitter, kernel::AdamWOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto a = cast<kernel::AdamWOp>(op);
    int64_t n = numElements(a.getParam());
    if (n == 0) { // nothing to update
      out.kind = "adamw";
      out.source = prelude(op);
      return success();
    }
    Launch l;
    l.entry = "adamw_step";
    l.block.x = kAdamWThreads;
    l.grid.x = std::min(kAdamWBlocks, (n + kAdamWThreads - 1) / kAdamWThreads);
    l.args = {{Kind::Operand, 0, 1, "param", /*writable=*/true},
              {Kind::Operand, 1, 1, "grad"},
              {Kind::Operand, 2, 1, "exp_avg", /*writable=*/true},
              {Kind::Operand, 3, 1, "exp_avg_sq", /*writable=*/true},
              {Kind::Operand, 4, 1, "hyper"}};
    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    os << "typedef " << elementName(a.getParam()) << " T;\n";
    os << "constexpr long long kN = " << n << ";\n";
    os << "constexpr double kBeta1 = " << doubleLiteral(a.getBeta1().convertToDouble()) << ";\n";
    os << "constexpr double kBeta2 = " << doubleLiteral(a.getBeta2().convertToDouble()) << ";\n";
    os << "constexpr double kEps = " << doubleLiteral(a.getEpsilon().convertToDouble()) << ";\n";
    os << "constexpr double kWeightDecay = " << doubleLiteral(a.getWeightDecay().convertToDouble())
       << ";\n\n";
    os << R"(__device__ __forceinline__ float adamSqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double adamSqrt(double x) { return sqrt(x); }

)";
    os << entrySignature(op, l) << " {\n"
       << R"(  // The run-time hyper-parameters, as the CPU rounds them into T.
  const T lr = T(hyper[0]), gradScale = T(hyper[2]);
  const double step = static_cast<double>(static_cast<long long>(hyper[1]));
  const T b1 = T(kBeta1), b2 = T(kBeta2), eps = T(kEps), wd = T(kWeightDecay);
  const T c1 = T(1.0 / (1.0 - pow(kBeta1, step)));
  const T c2 = T(1.0 / (1.0 - pow(kBeta2, step)));
  for (long long i : nestor::gridStride(kN)) {
    const T g = grad[i] * gradScale;
    const T m = b1 * exp_avg[i] + (T(1) - b1) * g;
    const T v = b2 * exp_avg_sq[i] + (T(1) - b2) * g * g;
    const T p = param[i];
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - lr * (m * c1 / (adamSqrt(v * c2) + eps) + wd * p);
  }
}
)";
    out.kind = "adamw";
    out.launches.push_back(std::move(l));
    return success();
  }
};

} // namespace

void nestor::cuda::registerOptimizerEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::SquaredNormOp::attachInterface<SquaredNormEmitter>(*ctx);
    kernel::AdamWOp::attachInterface<AdamWEmitter>(*ctx);
  });
}
