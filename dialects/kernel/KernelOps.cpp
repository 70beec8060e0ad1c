//===- KernelOps.cpp - Verifiers of the kernel dialect ---------------------===//
#include "dialects/kernel/KernelOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace nestor::kernel;

#include "dialects/kernel/KernelInterfaces.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/kernel/KernelOps.cpp.inc"

namespace {
/// The matrix view of a tensor: [product of all dims but the last, last dim].
std::pair<int64_t, int64_t> matrixView(RankedTensorType type) {
  if (type.getRank() == 0)
    return {1, 1};
  int64_t rows = 1;
  for (int64_t d : type.getShape().drop_back())
    rows =
        ShapedType::isDynamic(d) || ShapedType::isDynamic(rows) ? ShapedType::kDynamic : rows * d;
  return {rows, type.getShape().back()};
}
} // namespace

LogicalResult GemmOp::verify() {
  auto a = matrixView(getA().getType()), b = matrixView(getB().getType());
  auto c = matrixView(getResult().getType());
  if (getA().getType().getRank() < 2 || getB().getType().getRank() < 2)
    return emitOpError("operands must have rank 2 or more (a matrix view)");
  int64_t m = getTransposeA() ? a.second : a.first, ka = getTransposeA() ? a.first : a.second;
  int64_t kb = getTransposeB() ? b.second : b.first, n = getTransposeB() ? b.first : b.second;
  auto mismatch = [](int64_t x, int64_t y) {
    return !ShapedType::isDynamic(x) && !ShapedType::isDynamic(y) && x != y;
  };
  if (mismatch(ka, kb))
    return emitOpError("contraction sizes differ: ") << ka << " vs " << kb;
  if (mismatch(m, c.first) || mismatch(n, c.second))
    return emitOpError("result matrix view must be ") << m << "x" << n;
  Type elem = getA().getType().getElementType();
  if (getB().getType().getElementType() != elem || getResult().getType().getElementType() != elem)
    return emitOpError("operands and result must share one element type");
  if (getAcc() && getAcc().getType() != getResult().getType())
    return emitOpError("acc must have the result type");
  if (getMask()) {
    int64_t entries = getMask().getType().getDimSize(0) - 2;
    if (getMaskBlock() <= 0 || entries * static_cast<int64_t>(getMaskBlock()) != c.second)
      return emitOpError("mask of ") << entries << " entries with block " << getMaskBlock()
                                     << " does not cover " << c.second << " columns";
  }
  auto checkExtent = [&](Value mask, int64_t dim, int64_t groups, StringRef name) -> LogicalResult {
    if (!mask || ShapedType::isDynamic(dim))
      return success();
    int64_t entries = cast<RankedTensorType>(mask.getType()).getDimSize(0) - 2;
    if (entries <= 0 || dim % entries != 0 || groups <= 0 || entries % groups != 0)
      return emitOpError() << name << " extent mask of " << entries << " entries in " << groups
                           << " groups does not tile a dimension of " << dim;
    return success();
  };
  if (failed(checkExtent(getMExtent(), m, getMGroups(), "m")) ||
      failed(checkExtent(getNExtent(), n, getNGroups(), "n")) ||
      failed(checkExtent(getKExtent(), ka, getKGroups(), "k")))
    return failure();
  auto checkSelect = [&](Value select, Value extent, int64_t dim, StringRef name) -> LogicalResult {
    if (!select)
      return success();
    if (extent)
      return emitOpError() << name << " has both an extent and a selection";
    Type selectElem = cast<RankedTensorType>(select.getType()).getElementType();
    if (selectElem != elem)
      return emitOpError() << name << "_select must have the operands' element type";
    if (mismatch(cast<RankedTensorType>(select.getType()).getDimSize(0), dim))
      return emitOpError() << name << "_select must have one entry per " << name << " index ("
                           << dim << ")";
    return success();
  };
  if (failed(checkSelect(getNSelect(), getNExtent(), n, "n")) ||
      failed(checkSelect(getKSelect(), getKExtent(), ka, "k")))
    return failure();
  return success();
}

LogicalResult MambaProjSelectOp::verify() {
  int64_t h = static_cast<int64_t>(getNumHeads()), p = static_cast<int64_t>(getHeadDim());
  int64_t gn = static_cast<int64_t>(getNGroups() * getStateSize());
  int64_t rows = 2 * h * p + 2 * gn + h;
  if (getResult().getType().getDimSize(0) != rows)
    return emitOpError("selects in_proj's ") << rows << " rows (2HP + 2GN + H)";
  return success();
}

LogicalResult AddOp::verify() {
  if (getInputs().size() < 2)
    return emitOpError("needs at least two inputs");
  return success();
}

LogicalResult HostOp::verify() {
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError("region must take one argument per input");
  for (auto [arg, input] : llvm::zip(body.getArguments(), getInputs()))
    if (arg.getType() != input.getType())
      return emitOpError("region argument types must match the inputs");
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  if (!yield || yield.getValues().size() != getNumResults())
    return emitOpError("region must end in kernel.yield of one value per result");
  return success();
}

/// Operands a kernel updates in place are the caller's buffers: arguments of the function.
static bool isFunctionArgument(Value v) {
  return isa<BlockArgument>(v) &&
         isa<func::FuncOp>(cast<BlockArgument>(v).getOwner()->getParentOp());
}

LogicalResult AdamWOp::verify() {
  if (getHyper().getType().getDimSize(0) != 3)
    return emitOpError("hyper must be [lr, step, grad_scale]");
  for (Value v : {getParam(), getExpAvg(), getExpAvgSq()})
    if (!isFunctionArgument(v))
      return emitOpError("updates param and moments in place: they must be function arguments");
  return success();
}

LogicalResult MambaConvStepOp::verify() {
  auto proj = cast<RankedTensorType>(getProj().getType());
  auto state = cast<RankedTensorType>(getState().getType());
  int64_t conv =
      static_cast<int64_t>(getNumHeads() * getHeadDim() + 2 * getNGroups() * getStateSize());
  int64_t want[] = {proj.getDimSize(0),
                    cast<RankedTensorType>(getConvWeight().getType()).getDimSize(1) - 1, conv};
  if (proj.getRank() != 3 || state.getShape() != ArrayRef<int64_t>(want))
    return emitOpError("expects a state of shape [batch, conv_kernel - 1, conv channels]");
  if (!isFunctionArgument(getState()))
    return emitOpError("updates its state in place: it must be a function argument");
  return success();
}

LogicalResult MambaScanStepOp::verify() {
  auto proj = cast<RankedTensorType>(getProj().getType());
  auto state = cast<RankedTensorType>(getState().getType());
  int64_t want[] = {proj.getDimSize(0), static_cast<int64_t>(getNumHeads()),
                    static_cast<int64_t>(getHeadDim()), static_cast<int64_t>(getStateSize())};
  if (proj.getRank() != 3 || state.getShape() != ArrayRef<int64_t>(want))
    return emitOpError("expects a state of shape [batch, num_heads, head_dim, state_size]");
  if (!isFunctionArgument(getState()))
    return emitOpError("updates its state in place: it must be a function argument");
  return success();
}

LogicalResult AttentionStepOp::verify() {
  auto k = cast<RankedTensorType>(getK().getType());
  auto cache = cast<RankedTensorType>(getKCache().getType());
  if (k.getRank() != 3 || cache.getRank() != 3 || cache.getDimSize(0) != k.getDimSize(0) ||
      cache.getDimSize(2) != k.getDimSize(2) || cache.getDimSize(1) < k.getDimSize(1))
    return emitOpError("expects caches of shape [batch, context, kv_heads * head_dim]");
  if (!isFunctionArgument(getKCache()) || !isFunctionArgument(getVCache()))
    return emitOpError("updates its caches in place: they must be function arguments");
  return success();
}
