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

void addUse(SmallVectorImpl<MaskUse> &uses, OpOperand *operand, AxisKind axis, int64_t size,
            int64_t groups = 1) {
  if (operand)
    uses.push_back({operand->getOperandNumber(), axis, size, groups});
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
  addUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getTable()));
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
  addUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
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
  addUse(uses, maskOperand(getFfnMaskMutable()), AxisKind::FFN,
         cast<RankedTensorType>(getUpProj().getType()).getDimSize(0));
  addUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
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
  if (probs.getRank() < 1 || probs.getShape().back() != static_cast<int64_t>(getChoices().size()))
    return emitOpError("expects one probability per choice");
  if (getChoices().empty() || getChoices().front() != mask.getSize())
    return emitOpError("expects the first choice to be the mask size");
  return expectType(*this, getMaskGrad(), maskCotangentType(mask, probs.getElementType()),
                    "mask_grad");
}

//===----------------------------------------------------------------------===//
// Router ops: VJP rules and backward ops
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  auto grad = RouterGradOp::create(
      b, getLoc(), getW1().getType(), getB1().getType(), getW2().getType(), getB2().getType(),
      getInput(), getW1(), getB1(), getW2(), getB2(), resultGrads[0], getNegativeSlopeAttr());
  operandGrads.append(
      {Value(), grad.getW1Grad(), grad.getB1Grad(), grad.getW2Grad(), grad.getB2Grad()});
  return success();
}

LogicalResult GumbelSoftmaxOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                        SmallVectorImpl<Value> &operandGrads) {
  Value grad =
      GumbelSoftmaxGradOp::create(b, getLoc(), getLogits().getType(), getLogits(), getNoise(),
                                  getTau(), getScale(), getHard(), resultGrads[0]);
  // Noise, temperature, scale and the hard flag are run-time inputs, not parameters.
  operandGrads.append({grad, Value(), Value(), Value(), Value()});
  return success();
}

LogicalResult LayerKeepOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  operandGrads.push_back(LayerKeepGradOp::create(b, getLoc(), getProbs().getType(), getProbs(),
                                                 resultGrads[0], getOrderAttr(), getModeAttr()));
  return success();
}

LogicalResult ExpectedSizeOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  operandGrads.push_back(ExpectedSizeGradOp::create(b, getLoc(), getProbs().getType(), getProbs(),
                                                    resultGrads[0], getChoicesAttr(),
                                                    getModeAttr()));
  return success();
}

LogicalResult ParamCountOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                     SmallVectorImpl<Value> &operandGrads) {
  auto grad = ParamCountGradOp::create(
      b, getLoc(), getOperandTypes(), getHidden(), getFfn(), getAttnHeads(), getMambaHeads(),
      getMambaHeadDim(), getKeep(), resultGrads[0], getPatternAttr(), getMambaGroupsAttr(),
      getSsmStateSizeAttr(), getConvKernelAttr(), getNumKvHeadsAttr(), getHeadDimAttr(),
      getVocabSizeAttr(), getTiedEmbeddingsAttr());
  operandGrads.append(grad->result_begin(), grad->result_end());
  return success();
}

LogicalResult ResourceLossOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  auto grad = ResourceLossGradOp::create(
      b, getLoc(), getParams().getType(), getAnchors().getTypes(), getParams(), getBudget(),
      resultGrads[0], getAnchors(), getFractionsAttr(), getFullParamsAttr(), getDeadZoneAttr(),
      getAnchorWeightAttr());
  operandGrads.append({grad.getParamsGrad(), Value()});
  operandGrads.append(grad.getAnchorsGrad().begin(), grad.getAnchorsGrad().end());
  return success();
}

LogicalResult RouterGradOp::verify() {
  if (failed(expectType(*this, getW1Grad(), getW1().getType(), "w1_grad")) ||
      failed(expectType(*this, getB1Grad(), getB1().getType(), "b1_grad")) ||
      failed(expectType(*this, getW2Grad(), getW2().getType(), "w2_grad")))
    return failure();
  auto dz = cast<RankedTensorType>(getResultGrad().getType());
  if (!dz.hasStaticShape() ||
      dz.getNumElements() != cast<RankedTensorType>(getB2().getType()).getNumElements())
    return emitOpError("expects one result cotangent per router output");
  return expectType(*this, getB2Grad(), getB2().getType(), "b2_grad");
}

LogicalResult GumbelSoftmaxGradOp::verify() {
  if (failed(expectType(*this, getResultGrad(), getLogits().getType(), "result_grad")))
    return failure();
  return expectType(*this, getLogitsGrad(), getLogits().getType(), "logits_grad");
}

LogicalResult LayerKeepGradOp::verify() {
  if (cast<RankedTensorType>(getResultGrad().getType()).getDimSize(0) !=
      static_cast<int64_t>(getOrder().size()))
    return emitOpError("expects one keep cotangent per layer");
  return expectType(*this, getProbsGrad(), getProbs().getType(), "probs_grad");
}

LogicalResult ExpectedSizeGradOp::verify() {
  auto probs = cast<RankedTensorType>(getProbs().getType());
  if (probs.getRank() < 1 || probs.getShape().back() != static_cast<int64_t>(getChoices().size()))
    return emitOpError("expects one probability per choice");
  if (cast<RankedTensorType>(getResultGrad().getType()).getShape() != probs.getShape().drop_back())
    return emitOpError("expects a cotangent per row of probabilities");
  return expectType(*this, getProbsGrad(), getProbs().getType(), "probs_grad");
}

LogicalResult ParamCountGradOp::verify() {
  for (auto [operand, result] :
       llvm::zip(getOperation()->getOperands().take_front(6), getOperation()->getResults()))
    if (operand.getType() != result.getType())
      return emitOpError() << "expects each size's cotangent to have its type, got "
                           << result.getType() << " for " << operand.getType();
  return success();
}

LogicalResult ResourceLossGradOp::verify() {
  if (getAnchors().size() != getAnchorsGrad().size())
    return emitOpError("expects one cotangent per anchor");
  for (auto [a, g] : llvm::zip(getAnchors(), getAnchorsGrad()))
    if (failed(expectType(*this, g, a.getType(), "anchor cotangent")))
      return failure();
  return expectType(*this, getParamsGrad(), getParams().getType(), "params_grad");
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  Type t = elementTypeOf(getInput());
  auto grad = AttentionGradOp::create(
      b, getLoc(), getInput().getType(), getQProj().getType(), getKProj().getType(),
      getVProj().getType(), getOProj().getType(), optionalCotangentType(getHeadsMask(), t),
      optionalCotangentType(getHiddenMask(), t), getInput(), getQProj(), getKProj(), getVProj(),
      getOProj(), resultGrads[0], getHeadsMask(), getHiddenMask(), getNumHeadsAttr(),
      getNumKvHeadsAttr(), getHeadDimAttr());
  operandGrads.append({grad.getInputGrad(), grad.getQProjGrad(), grad.getKProjGrad(),
                       grad.getVProjGrad(), grad.getOProjGrad()});
  if (getHeadsMask())
    operandGrads.push_back(grad.getHeadsMaskGrad());
  if (getHiddenMask())
    operandGrads.push_back(grad.getHiddenMaskGrad());
  return success();
}

LogicalResult AttentionGradOp::verify() {
  Type t = elementTypeOf(getInput());
  if (failed(expectType(*this, getResultGrad(), getInput().getType(), "result_grad")) ||
      failed(expectType(*this, getInputGrad(), getInput().getType(), "input_grad")) ||
      failed(expectType(*this, getQProjGrad(), getQProj().getType(), "q_proj_grad")) ||
      failed(expectType(*this, getKProjGrad(), getKProj().getType(), "k_proj_grad")) ||
      failed(expectType(*this, getVProjGrad(), getVProj().getType(), "v_proj_grad")) ||
      failed(expectType(*this, getOProjGrad(), getOProj().getType(), "o_proj_grad")) ||
      failed(expectMaskGrad(*this, getHeadsMask(), getHeadsMaskGrad(), t, "heads_mask_grad")))
    return failure();
  return expectMaskGrad(*this, getHiddenMask(), getHiddenMaskGrad(), t, "hidden_mask_grad");
}

LogicalResult AttentionGradOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::AttnHeads,
         static_cast<int64_t>(getNumHeads()), static_cast<int64_t>(getNumKvHeads()));
  addUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// Mamba2
//===----------------------------------------------------------------------===//

LogicalResult Mamba2Op::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  Type t = elementTypeOf(getInput());
  auto grad = Mamba2GradOp::create(
      b, getLoc(), getInput().getType(), getInProj().getType(), getConvWeight().getType(),
      getConvBias().getType(), getDtBias().getType(), getALog().getType(), getDSkip().getType(),
      getNormWeight().getType(), getOutProj().getType(), optionalCotangentType(getHeadsMask(), t),
      optionalCotangentType(getChannelsMask(), t), optionalCotangentType(getHiddenMask(), t),
      getInput(), getInProj(), getConvWeight(), getConvBias(), getDtBias(), getALog(), getDSkip(),
      getNormWeight(), getOutProj(), resultGrads[0], getHeadsMask(), getChannelsMask(),
      getHiddenMask(), getNumHeadsAttr(), getHeadDimAttr(), getNGroupsAttr(), getStateSizeAttr(),
      getEpsilonAttr());
  // Results 0..8 follow operands 0..8; the present mask cotangents follow in order.
  operandGrads.append(grad->result_begin(), grad->result_begin() + 9);
  for (Value g : {grad.getHeadsMaskGrad(), grad.getChannelsMaskGrad(), grad.getHiddenMaskGrad()})
    if (g)
      operandGrads.push_back(g);
  return success();
}

LogicalResult Mamba2GradOp::verify() {
  Type t = elementTypeOf(getInput());
  if (failed(expectMaskGrad(*this, getHeadsMask(), getHeadsMaskGrad(), t, "heads_mask_grad")) ||
      failed(
          expectMaskGrad(*this, getChannelsMask(), getChannelsMaskGrad(), t, "channels_mask_grad")))
    return failure();
  return expectMaskGrad(*this, getHiddenMask(), getHiddenMaskGrad(), t, "hidden_mask_grad");
}

LogicalResult Mamba2GradOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::MambaHeads,
         static_cast<int64_t>(getNumHeads()), static_cast<int64_t>(getNGroups()));
  addUse(uses, maskOperand(getChannelsMaskMutable()), AxisKind::MambaHeadDim,
         static_cast<int64_t>(getHeadDim()));
  addUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}
