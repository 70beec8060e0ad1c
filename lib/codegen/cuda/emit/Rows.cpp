//===- Rows.cpp - CUDA emitters of the row kernels -------------------------===//
//
// One thread block per row for kernels that reduce over a row (norms); grid-stride loops for
// elementwise kernels. Semantics: lib/codegen/cpu/Kernels.h, "Row kernels".
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

} // namespace

void nestor::cuda::registerRowEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::RMSNormOp::attachInterface<RMSNormEmitter>(*ctx);
  });
}
