//===- ElasticGradients.cpp - VJP rules and backward ops -------------------===//
//
// Each forward op builds its own vector-Jacobian product (GradientOpInterface); the backward
// ops it emits are verified here. The arithmetic of each backward op is defined in
// ElasticOps.td and implemented by the backends (and by the float64 reference evaluator).
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace nestor::elastic;

namespace {

Type elementTypeOf(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }

/// The cotangent type of a differentiable value (see GradientOpInterface).
Type cotangentType(Value v, Type elementType) {
  if (auto mask = dyn_cast<MaskType>(v.getType()))
    return maskCotangentType(mask, elementType);
  return v.getType();
}

Type optionalCotangentType(Value v, Type elementType) {
  return v ? cotangentType(v, elementType) : Type();
}

/// Appends the type of an optional result when it is present.
void appendIfPresent(SmallVectorImpl<Type> &types, Type t) {
  if (t)
    types.push_back(t);
}

LogicalResult expectType(Operation *op, Value v, Type expected, StringRef name) {
  if (v.getType() == expected)
    return success();
  return op->emitOpError() << "expects " << name << " of type " << expected << ", got "
                           << v.getType();
}

LogicalResult expectMaskGrad(Operation *op, Value mask, Value grad, Type elementType,
                             StringRef name) {
  if (static_cast<bool>(mask) != static_cast<bool>(grad))
    return op->emitOpError() << "expects " << name << " exactly when its mask is given";
  if (!mask)
    return success();
  return expectType(op, grad, cotangentType(mask, elementType), name);
}

OpOperand *operandOf(Operation *op, Value v) {
  if (!v)
    return nullptr;
  for (OpOperand &operand : op->getOpOperands())
    if (operand.get() == v)
      return &operand;
  return nullptr;
}

void addUse(SmallVectorImpl<MaskUse> &uses, Operation *op, Value mask, AxisKind axis,
            int64_t size) {
  if (OpOperand *operand = operandOf(op, mask))
    uses.push_back({operand->getOperandNumber(), axis, size, 1});
}

int64_t lastDim(Value v) { return cast<RankedTensorType>(v.getType()).getShape().back(); }

} // namespace

//===----------------------------------------------------------------------===//
// VJP rules of the forward ops
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                SmallVectorImpl<Value> &operandGrads) {
  Type t = elementTypeOf(getTable());
  SmallVector<Type> types{getTable().getType()};
  appendIfPresent(types, optionalCotangentType(getHiddenMask(), t));
  auto grad = EmbedGradOp::create(b, getLoc(), types, getTokens(), getTable(), resultGrads[0],
                                  getHiddenMask());
  operandGrads.append({Value(), grad.getTableGrad()});
  if (getHiddenMask())
    operandGrads.push_back(grad.getHiddenMaskGrad());
  return success();
}

LogicalResult RMSNormOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                  SmallVectorImpl<Value> &operandGrads) {
  Type t = elementTypeOf(getInput());
  SmallVector<Type> types{getInput().getType(), getWeight().getType()};
  appendIfPresent(types, optionalCotangentType(getHiddenMask(), t));
  auto grad = RMSNormGradOp::create(b, getLoc(), types, getInput(), getWeight(), resultGrads[0],
                                    getHiddenMask(), getEpsilonAttr());
  operandGrads.append({grad.getInputGrad(), grad.getWeightGrad()});
  if (getHiddenMask())
    operandGrads.push_back(grad.getHiddenMaskGrad());
  return success();
}

LogicalResult MLPOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                              SmallVectorImpl<Value> &operandGrads) {
  Type t = elementTypeOf(getInput());
  auto grad = MLPGradOp::create(b, getLoc(), getInput().getType(), getUpProj().getType(),
                                getDownProj().getType(), optionalCotangentType(getFfnMask(), t),
                                optionalCotangentType(getHiddenMask(), t), getInput(), getUpProj(),
                                getDownProj(), resultGrads[0], getFfnMask(), getHiddenMask());
  operandGrads.append({grad.getInputGrad(), grad.getUpProjGrad(), grad.getDownProjGrad()});
  if (getFfnMask())
    operandGrads.push_back(grad.getFfnMaskGrad());
  if (getHiddenMask())
    operandGrads.push_back(grad.getHiddenMaskGrad());
  return success();
}

LogicalResult LMHeadOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  auto grad = LMHeadGradOp::create(b, getLoc(), getInput().getType(), getWeight().getType(),
                                   getInput(), getWeight(), resultGrads[0]);
  operandGrads.append({grad.getInputGrad(), grad.getWeightGrad()});
  return success();
}

LogicalResult DepthGateOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  SmallVector<Type> types{getBlock().getType()};
  if (getKeep())
    types.push_back(getKeep().getType());
  auto grad = DepthGateGradOp::create(b, getLoc(), types, getBlock(), resultGrads[0], getKeep(),
                                      getLayerAttr());
  operandGrads.append({resultGrads[0], grad.getBlockGrad()});
  if (getKeep())
    operandGrads.push_back(grad.getKeepGrad());
  return success();
}

LogicalResult CrossEntropyOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  Value grad = CrossEntropyGradOp::create(b, getLoc(), getLogits().getType(), getLogits(),
                                          getTargets(), resultGrads[0], getIgnoreIndexAttr());
  operandGrads.append({grad, Value()});
  return success();
}

LogicalResult KLDistillOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  // The teacher is frozen: it gets no cotangent.
  Value grad = KLDistillGradOp::create(b, getLoc(), getStudent().getType(), getStudent(),
                                       getTeacher(), resultGrads[0], getTemperatureAttr());
  operandGrads.append({grad, Value()});
  return success();
}

LogicalResult PrefixMaskOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                     SmallVectorImpl<Value> &operandGrads) {
  Value grad = PrefixMaskGradOp::create(b, getLoc(), getProbs().getType(), getProbs(),
                                        resultGrads[0], getChoicesAttr(), getModeAttr(),
                                        TypeAttr::get(getType()), getRowAttr());
  operandGrads.push_back(grad);
  return success();
}

//===----------------------------------------------------------------------===//
// Backward ops
//===----------------------------------------------------------------------===//

LogicalResult EmbedGradOp::verify() {
  Type t = elementTypeOf(getTable());
  if (failed(expectType(*this, getTableGrad(), getTable().getType(), "table_grad")))
    return failure();
  return expectMaskGrad(*this, getHiddenMask(), getHiddenMaskGrad(), t, "hidden_mask_grad");
}

LogicalResult EmbedGradOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addUse(uses, *this, getHiddenMask(), AxisKind::Hidden, lastDim(getTable()));
  return success();
}

LogicalResult RMSNormGradOp::verify() {
  Type t = elementTypeOf(getInput());
  if (failed(expectType(*this, getResultGrad(), getInput().getType(), "result_grad")) ||
      failed(expectType(*this, getInputGrad(), getInput().getType(), "input_grad")) ||
      failed(expectType(*this, getWeightGrad(), getWeight().getType(), "weight_grad")))
    return failure();
  return expectMaskGrad(*this, getHiddenMask(), getHiddenMaskGrad(), t, "hidden_mask_grad");
}

LogicalResult RMSNormGradOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addUse(uses, *this, getHiddenMask(), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

LogicalResult MLPGradOp::verify() {
  Type t = elementTypeOf(getInput());
  if (failed(expectType(*this, getResultGrad(), getInput().getType(), "result_grad")) ||
      failed(expectType(*this, getInputGrad(), getInput().getType(), "input_grad")) ||
      failed(expectType(*this, getUpProjGrad(), getUpProj().getType(), "up_proj_grad")) ||
      failed(expectType(*this, getDownProjGrad(), getDownProj().getType(), "down_proj_grad")) ||
      failed(expectMaskGrad(*this, getFfnMask(), getFfnMaskGrad(), t, "ffn_mask_grad")))
    return failure();
  return expectMaskGrad(*this, getHiddenMask(), getHiddenMaskGrad(), t, "hidden_mask_grad");
}

LogicalResult MLPGradOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addUse(uses, *this, getFfnMask(), AxisKind::FFN,
         cast<RankedTensorType>(getUpProj().getType()).getDimSize(0));
  addUse(uses, *this, getHiddenMask(), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

LogicalResult LMHeadGradOp::verify() {
  if (failed(expectType(*this, getInputGrad(), getInput().getType(), "input_grad")))
    return failure();
  return expectType(*this, getWeightGrad(), getWeight().getType(), "weight_grad");
}

LogicalResult DepthGateGradOp::verify() {
  if (static_cast<bool>(getKeep()) != getLayer().has_value() ||
      static_cast<bool>(getKeep()) != static_cast<bool>(getKeepGrad()))
    return emitOpError("expects `keep`, `layer` and the keep cotangent together or none");
  if (getKeep())
    return expectType(*this, getKeepGrad(), getKeep().getType(), "keep_grad");
  return success();
}

LogicalResult CrossEntropyGradOp::verify() {
  return expectType(*this, getLogitsGrad(), getLogits().getType(), "logits_grad");
}

LogicalResult KLDistillGradOp::verify() {
  if (getTemperature().convertToDouble() <= 0.0)
    return emitOpError("expects a positive temperature");
  return expectType(*this, getStudentGrad(), getStudent().getType(), "student_grad");
}

LogicalResult PrefixMaskGradOp::verify() {
  auto mask = cast<MaskType>(getMask());
  if (failed(expectType(*this, getProbsGrad(), getProbs().getType(), "probs_grad")))
    return failure();
  auto probs = cast<RankedTensorType>(getProbs().getType());
  if (probs.getShape().back() != static_cast<int64_t>(getChoices().size()))
    return emitOpError("expects one probability per choice");
  if (getChoices().empty() || getChoices().front() != mask.getSize())
    return emitOpError("expects the first choice to be the mask size");
  return expectType(*this, getMaskGrad(), maskCotangentType(mask, probs.getElementType()),
                    "mask_grad");
}
