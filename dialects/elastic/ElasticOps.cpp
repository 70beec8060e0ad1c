//===- ElasticOps.cpp - Ops of the elastic dialect -------------------------===//
//
// Verifiers enforce the shape and group rules of METHOD.md §1-§2 on each op; the
// ElasticMaskConsistency trait checks every mask operand against the dimension it masks.
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace mlir;
using namespace nestor::elastic;

#include "dialects/elastic/ElasticInterfaces.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

namespace {

std::string shapeString(ArrayRef<int64_t> shape) {
  if (shape.empty())
    return "a scalar";
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::interleave(
      shape, os,
      [&](int64_t d) {
        if (ShapedType::isDynamic(d))
          os << "?";
        else
          os << d;
      },
      "x");
  return s;
}

/// Checks that `value` is a ranked tensor of shape `expected`, where a dynamic dimension on
/// either side matches anything.
LogicalResult expectShape(Operation *op, Value value, ArrayRef<int64_t> expected, StringRef name) {
  auto type = cast<RankedTensorType>(value.getType());
  bool ok = type.getRank() == static_cast<int64_t>(expected.size());
  for (auto [actual, want] : llvm::zip(type.getShape(), expected))
    ok = ok && (ShapedType::isDynamic(actual) || ShapedType::isDynamic(want) || actual == want);
  if (ok)
    return success();
  return op->emitOpError() << "expects " << name << " of shape " << shapeString(expected)
                           << ", got " << shapeString(type.getShape());
}

/// All float tensors among `values` share the element type of `reference`.
LogicalResult expectSameElementType(Operation *op, Value reference, ValueRange values) {
  Type elementType = cast<ShapedType>(reference.getType()).getElementType();
  for (Value v : values) {
    auto shaped = dyn_cast<ShapedType>(v.getType());
    if (!shaped || !isa<FloatType>(shaped.getElementType()))
      continue;
    if (shaped.getElementType() != elementType)
      return op->emitOpError() << "mixes element types " << elementType << " and "
                               << shaped.getElementType();
  }
  return success();
}

int64_t lastDim(Value v) { return cast<RankedTensorType>(v.getType()).getShape().back(); }

int64_t dim(Value v, unsigned i) { return cast<RankedTensorType>(v.getType()).getDimSize(i); }

/// Choices of an axis: non-empty, positive, strictly descending, each a multiple of `groups`.
LogicalResult verifyChoices(Operation *op, ArrayRef<int64_t> choices, int64_t groups) {
  if (choices.empty())
    return op->emitOpError("expects at least one choice");
  for (auto [i, k] : llvm::enumerate(choices)) {
    if (k <= 0)
      return op->emitOpError() << "choice " << i << " is " << k << "; choices must be positive";
    if (i > 0 && k >= choices[i - 1])
      return op->emitOpError() << "choices must be strictly descending (largest first), but " << k
                               << " follows " << choices[i - 1];
    if (k % groups != 0)
      return op->emitOpError() << "choice " << k << " is not a multiple of the " << groups
                               << " groups (heads are trimmed per group)";
  }
  return success();
}

void addMaskUse(SmallVectorImpl<MaskUse> &uses, OpOperand *operand, AxisKind axis, int64_t size,
                int64_t groups = 1) {
  if (operand)
    uses.push_back({operand->getOperandNumber(), axis, size, groups});
}

StringRef article(AxisKind axis) { return axis == AxisKind::AttnHeads ? "an" : "a"; }

/// Sizes in attributes stay below 2^24 so that products of a few of them fit in int64.
LogicalResult expectSaneSizes(Operation *op, ArrayRef<std::pair<StringRef, int64_t>> sizes) {
  for (auto [name, value] : sizes)
    if (value > (int64_t(1) << 24))
      return op->emitOpError() << name << " = " << value
                               << " is larger than the supported maximum 16777216";
  return success();
}

/// Probabilities have a static shape (one entry per choice).
LogicalResult expectStaticProbs(Operation *op, Value probs) {
  if (!cast<RankedTensorType>(probs.getType()).hasStaticShape())
    return op->emitOpError("expects probabilities of static shape");
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// The dialect-wide mask trait
//===----------------------------------------------------------------------===//

LogicalResult nestor::elastic::verifyMaskConsistency(Operation *op) {
  SmallVector<unsigned> maskOperands;
  for (OpOperand &operand : op->getOpOperands())
    if (isa<MaskType>(operand.get().getType()))
      maskOperands.push_back(operand.getOperandNumber());
  if (maskOperands.empty())
    return success();

  auto masked = dyn_cast<MaskedOpInterface>(op);
  if (!masked)
    return op->emitOpError("takes a mask operand but does not declare what it masks");
  SmallVector<MaskUse> uses;
  if (failed(masked.getMaskUses(uses)))
    return success(); // The op's own verifier reports its malformed shapes.

  for (unsigned index : maskOperands) {
    const MaskUse *use =
        llvm::find_if(uses, [&](const MaskUse &u) { return u.operandIndex == index; });
    if (use == uses.end())
      return op->emitOpError() << "mask operand #" << index << " masks no declared axis";
    auto type = cast<MaskType>(op->getOperand(index).getType());
    if (type.getAxis() != use->axis)
      return op->emitOpError() << "operand #" << index << " must be " << article(use->axis) << " "
                               << stringifyAxisKind(use->axis) << " mask, got "
                               << article(type.getAxis()) << " "
                               << stringifyAxisKind(type.getAxis()) << " mask";
    // A dimension unknown until run time cannot be checked here.
    if (!ShapedType::isDynamic(use->size) && type.getSize() != use->size)
      return op->emitOpError() << stringifyAxisKind(use->axis) << " mask has size "
                               << type.getSize() << " but the masked dimension has size "
                               << use->size;
    if (type.getGroups() != use->groups)
      return op->emitOpError() << stringifyAxisKind(use->axis) << " mask has " << type.getGroups()
                               << " groups but the op has " << use->groups;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// EmbedOp
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::verify() {
  int64_t hidden = dim(getTable(), 1);
  if (failed(expectShape(*this, getResult(), {dim(getTokens(), 0), dim(getTokens(), 1), hidden},
                         "result")))
    return failure();
  return expectSameElementType(*this, getTable(), getResult());
}

LogicalResult EmbedOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, dim(getTable(), 1));
  return success();
}

//===----------------------------------------------------------------------===//
// RMSNormOp
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  if (!(getEpsilon().convertToDouble() > 0.0))
    return emitOpError("expects a positive epsilon");
  if (getInput().getType() != getResult().getType())
    return emitOpError("expects the result type to equal the input type");
  if (failed(expectShape(*this, getWeight(), {lastDim(getInput())}, "weight")))
    return failure();
  return expectSameElementType(*this, getInput(), getWeight());
}

LogicalResult RMSNormOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// Mamba2Op, Mamba2StepOp
//===----------------------------------------------------------------------===//

namespace {

/// The rules of a Mamba2 mixer, shared by the whole-sequence op and the decode step.
template <typename OpT> LogicalResult verifyMamba2(OpT op) {
  if (failed(expectSaneSizes(op, {{"num_heads", op.getNumHeads()},
                                  {"head_dim", op.getHeadDim()},
                                  {"n_groups", op.getNGroups()},
                                  {"state_size", op.getStateSize()}})))
    return failure();
  int64_t h = op.getNumHeads(), p = op.getHeadDim(), g = op.getNGroups(), n = op.getStateSize();
  if (h % g != 0)
    return op.emitOpError() << "num_heads (" << h << ") must be divisible by n_groups (" << g
                            << ")";
  if (!(op.getEpsilon().convertToDouble() > 0.0))
    return op.emitOpError("expects a positive epsilon");
  if (op.getInput().getType() != op.getResult().getType())
    return op.emitOpError("expects the result type to equal the input type");
  int64_t d = lastDim(op.getInput());
  int64_t conv = h * p + 2 * g * n, rows = 2 * h * p + 2 * g * n + h;
  int64_t kernel = dim(op.getConvWeight(), 1);
  if (!ShapedType::isDynamic(kernel) && kernel < 1)
    return op.emitOpError("expects a convolution kernel of at least 1");
  if (failed(expectShape(op, op.getInProj(), {rows, d}, "in_proj")) ||
      failed(expectShape(op, op.getConvWeight(), {conv, kernel}, "conv_weight")) ||
      failed(expectShape(op, op.getConvBias(), {conv}, "conv_bias")) ||
      failed(expectShape(op, op.getDtBias(), {h}, "dt_bias")) ||
      failed(expectShape(op, op.getALog(), {h}, "a_log")) ||
      failed(expectShape(op, op.getDSkip(), {h}, "d_skip")) ||
      failed(expectShape(op, op.getNormWeight(), {h * p}, "norm_weight")) ||
      failed(expectShape(op, op.getOutProj(), {d, h * p}, "out_proj")))
    return failure();
  return expectSameElementType(op, op.getInput(), op->getOperands());
}

/// State operands of a decode step are the caller's buffers, updated in place.
LogicalResult expectFunctionArgument(Operation *op, Value v, StringRef name) {
  auto arg = dyn_cast<BlockArgument>(v);
  if (!arg || !isa<FunctionOpInterface>(arg.getOwner()->getParentOp()))
    return op->emitOpError() << "updates " << name
                             << " in place: it must be an argument of the enclosing function";
  return success();
}

} // namespace

LogicalResult Mamba2Op::verify() { return verifyMamba2(*this); }

LogicalResult Mamba2StepOp::verify() {
  if (failed(verifyMamba2(*this)))
    return failure();
  int64_t b = dim(getInput(), 0), h = getNumHeads(), p = getHeadDim(), n = getStateSize();
  int64_t conv = h * p + 2 * getNGroups() * n, kernel = dim(getConvWeight(), 1);
  int64_t window = ShapedType::isDynamic(kernel) ? kernel : kernel - 1;
  if (failed(expectShape(*this, getConvState(), {b, window, conv}, "conv_state")) ||
      failed(expectShape(*this, getSsmState(), {b, h, p, n}, "ssm_state")) ||
      failed(expectFunctionArgument(*this, getConvState(), "conv_state")) ||
      failed(expectFunctionArgument(*this, getSsmState(), "ssm_state")))
    return failure();
  return success();
}

LogicalResult Mamba2StepOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::MambaHeads, getNumHeads(),
             getNGroups());
  addMaskUse(uses, maskOperand(getChannelsMaskMutable()), AxisKind::MambaHeadDim, getHeadDim());
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

LogicalResult Mamba2Op::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::MambaHeads, getNumHeads(),
             getNGroups());
  addMaskUse(uses, maskOperand(getChannelsMaskMutable()), AxisKind::MambaHeadDim, getHeadDim());
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

namespace {

/// The rules of causal GQA attention, shared by the whole-sequence op and the decode step.
template <typename OpT> LogicalResult verifyAttention(OpT op) {
  if (failed(expectSaneSizes(op, {{"num_heads", op.getNumHeads()},
                                  {"num_kv_heads", op.getNumKvHeads()},
                                  {"head_dim", op.getHeadDim()}})))
    return failure();
  int64_t nh = op.getNumHeads(), nkv = op.getNumKvHeads(), hd = op.getHeadDim();
  if (nh % nkv != 0)
    return op.emitOpError() << "num_heads (" << nh << ") must be divisible by num_kv_heads (" << nkv
                            << ")";
  if (op.getInput().getType() != op.getResult().getType())
    return op.emitOpError("expects the result type to equal the input type");
  int64_t d = lastDim(op.getInput());
  if (failed(expectShape(op, op.getQProj(), {nh * hd, d}, "q_proj")) ||
      failed(expectShape(op, op.getKProj(), {nkv * hd, d}, "k_proj")) ||
      failed(expectShape(op, op.getVProj(), {nkv * hd, d}, "v_proj")) ||
      failed(expectShape(op, op.getOProj(), {d, nh * hd}, "o_proj")))
    return failure();
  return expectSameElementType(op, op.getInput(), op->getOperands());
}

} // namespace

LogicalResult AttentionOp::verify() { return verifyAttention(*this); }

LogicalResult AttentionStepOp::verify() {
  if (failed(verifyAttention(*this)))
    return failure();
  int64_t b = dim(getInput(), 0), width = getNumKvHeads() * getHeadDim();
  if (failed(expectShape(*this, getKCache(), {b, ShapedType::kDynamic, width}, "k_cache")) ||
      failed(expectFunctionArgument(*this, getKCache(), "k_cache")) ||
      failed(expectFunctionArgument(*this, getVCache(), "v_cache")))
    return failure();
  if (ShapedType::isDynamic(dim(getKCache(), 1)))
    return emitOpError("expects a static cache length (the longest context)");
  return success();
}

LogicalResult AttentionStepOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::AttnHeads, getNumHeads(),
             getNumKvHeads());
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

LogicalResult AttentionOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getHeadsMaskMutable()), AxisKind::AttnHeads, getNumHeads(),
             getNumKvHeads());
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// MLPOp
//===----------------------------------------------------------------------===//

LogicalResult MLPOp::verify() {
  if (getInput().getType() != getResult().getType())
    return emitOpError("expects the result type to equal the input type");
  int64_t d = lastDim(getInput());
  int64_t f = dim(getUpProj(), 0);
  if (failed(expectShape(*this, getUpProj(), {f, d}, "up_proj")) ||
      failed(expectShape(*this, getDownProj(), {d, f}, "down_proj")))
    return failure();
  return expectSameElementType(*this, getInput(), getOperands());
}

LogicalResult MLPOp::getMaskUses(SmallVectorImpl<MaskUse> &uses) {
  addMaskUse(uses, maskOperand(getFfnMaskMutable()), AxisKind::FFN, dim(getUpProj(), 0));
  addMaskUse(uses, maskOperand(getHiddenMaskMutable()), AxisKind::Hidden, lastDim(getInput()));
  return success();
}

//===----------------------------------------------------------------------===//
// DepthGateOp, LMHeadOp
//===----------------------------------------------------------------------===//

LogicalResult DepthGateOp::verify() {
  if (static_cast<bool>(getKeep()) != getLayer().has_value())
    return emitOpError("expects `keep` and `layer` together (a gated layer) or neither");
  if (getKeep()) {
    int64_t layers = dim(getKeep(), 0);
    if (!ShapedType::isDynamic(layers) && static_cast<int64_t>(*getLayer()) >= layers)
      return emitOpError() << "layer " << *getLayer() << " is out of range for " << layers
                           << " keep gates";
    return expectSameElementType(*this, getResidual(), getKeep());
  }
  return success();
}

LogicalResult LMHeadOp::verify() {
  int64_t vocab = dim(getWeight(), 0);
  if (failed(expectShape(*this, getWeight(), {vocab, lastDim(getInput())}, "weight")) ||
      failed(expectShape(*this, getResult(), {dim(getInput(), 0), dim(getInput(), 1), vocab},
                         "result")))
    return failure();
  return expectSameElementType(*this, getInput(), {getWeight(), getResult()});
}

//===----------------------------------------------------------------------===//
// Router ops
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::verify() {
  if (!(getNegativeSlope().convertToDouble() >= 0.0))
    return emitOpError("expects a non-negative LeakyReLU slope");
  auto resultType = cast<RankedTensorType>(getResult().getType());
  if (resultType.getRank() != 1 && resultType.getRank() != 2)
    return emitOpError("expects a result of one row of choices or one row per layer");
  if (!resultType.hasStaticShape())
    return emitOpError("expects a static result shape");
  int64_t outputs = resultType.getNumElements();
  int64_t budgets = dim(getInput(), 0), hidden = dim(getW1(), 0);
  if (failed(expectShape(*this, getW1(), {hidden, budgets}, "w1")) ||
      failed(expectShape(*this, getB1(), {hidden}, "b1")) ||
      failed(expectShape(*this, getW2(), {outputs, hidden}, "w2")) ||
      failed(expectShape(*this, getB2(), {outputs}, "b2")))
    return failure();
  return expectSameElementType(*this, getInput(), getOperation()->getOperands());
}

LogicalResult GumbelNoiseOp::verify() {
  if (!cast<RankedTensorType>(getResult().getType()).hasStaticShape())
    return emitOpError("expects a static result shape");
  return success();
}

LogicalResult GumbelSoftmaxOp::verify() {
  auto type = cast<RankedTensorType>(getLogits().getType());
  if (type.getRank() < 1)
    return emitOpError("expects logits with at least one dimension");
  if (getNoise().getType() != type || getResult().getType() != type)
    return emitOpError("expects logits, noise and result of one type");
  return expectSameElementType(*this, getLogits(), {getTau(), getScale()});
}

LogicalResult PrefixMaskOp::verify() {
  MaskType mask = getResult().getType();
  ArrayRef<int64_t> choices = getChoices();
  if (failed(verifyChoices(*this, choices, mask.getGroups())))
    return failure();
  if (choices.front() != mask.getSize())
    return emitOpError() << "first choice " << choices.front() << " must equal the mask size "
                         << mask.getSize();
  if (failed(expectStaticProbs(*this, getProbs())))
    return failure();
  auto probs = cast<RankedTensorType>(getProbs().getType());
  if (probs.getRank() != 1 && probs.getRank() != 2)
    return emitOpError("expects probabilities of one axis (rank 1) or one row per layer "
                       "(rank 2)");
  if (probs.getShape().back() != static_cast<int64_t>(choices.size()))
    return emitOpError() << "expects " << choices.size() << " probabilities (one per choice), got "
                         << probs.getShape().back();
  if (probs.getRank() == 2 && !getRow())
    return emitOpError("expects `row` to pick a layer's probabilities from a rank-2 input");
  if (probs.getRank() == 1 && getRow())
    return emitOpError("has `row` but its probabilities have a single row");
  if (getRow() && static_cast<int64_t>(*getRow()) >= probs.getDimSize(0))
    return emitOpError() << "row " << *getRow() << " is out of range for " << probs.getDimSize(0)
                         << " rows";
  return success();
}

LogicalResult LayerKeepOp::verify() {
  // Probabilities and gates are Elastic_Vector: ODS has checked their static shapes.
  int64_t layers = dim(getResult(), 0);
  ArrayRef<int64_t> order = getOrder();
  if (static_cast<int64_t>(order.size()) != layers)
    return emitOpError() << "expects an order of " << layers << " layers, got " << order.size();
  SmallVector<bool> seen(layers, false);
  for (int64_t layer : order) {
    if (layer < 0 || layer >= layers || seen[layer])
      return emitOpError("expects `order` to be a permutation of the layers");
    seen[layer] = true;
  }
  int64_t options = dim(getProbs(), 0);
  if (options < 1 || options > layers)
    return emitOpError() << "expects between 1 and " << layers
                         << " depth choices (drop 0..K layers, K < layers), got " << options;
  return expectSameElementType(*this, getProbs(), getResult());
}

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

LogicalResult CrossEntropyOp::verify() {
  if (failed(
          expectShape(*this, getTargets(), {dim(getLogits(), 0), dim(getLogits(), 1)}, "targets")))
    return failure();
  return expectSameElementType(*this, getLogits(), getResult());
}

LogicalResult KLDistillOp::verify() {
  if (!(getTemperature().convertToDouble() > 0.0))
    return emitOpError("expects a positive temperature");
  auto student = cast<RankedTensorType>(getStudent().getType());
  if (failed(expectShape(*this, getTeacher(), student.getShape(), "teacher logits")))
    return failure();
  return expectSameElementType(*this, getStudent(), {getTeacher(), getResult()});
}

LogicalResult ExpectedSizeOp::verify() {
  if (failed(verifyChoices(*this, getChoices(), /*groups=*/1)) ||
      failed(expectStaticProbs(*this, getProbs())))
    return failure();
  auto probs = cast<RankedTensorType>(getProbs().getType());
  if (probs.getRank() < 1 || probs.getShape().back() != static_cast<int64_t>(getChoices().size()))
    return emitOpError() << "expects " << getChoices().size()
                         << " probabilities (one per choice) in the last dimension";
  if (failed(expectShape(*this, getResult(), probs.getShape().drop_back(), "result")))
    return failure();
  return expectSameElementType(*this, getProbs(), getResult());
}

LogicalResult ParamCountOp::verify() {
  StringRef pattern = getPattern();
  if (pattern.empty())
    return emitOpError("expects a non-empty layer pattern");
  int64_t counts[3] = {0, 0, 0}; // Mamba, attention, MLP
  for (auto [i, c] : llvm::enumerate(pattern)) {
    switch (c) {
    case 'M':
      ++counts[0];
      break;
    case '*':
      ++counts[1];
      break;
    case '-':
      ++counts[2];
      break;
    default:
      return emitOpError() << "pattern character '" << c << "' at " << i
                           << " is none of 'M', '*', '-'";
    }
  }
  auto perLayer = [&](Value v, int64_t layers, StringRef name) -> LogicalResult {
    auto type = cast<RankedTensorType>(v.getType());
    if (type.getRank() == 0)
      return success();
    return expectShape(*this, v, {layers}, name);
  };
  if (failed(perLayer(getFfn(), counts[2], "ffn (one per MLP layer)")) ||
      failed(perLayer(getAttnHeads(), counts[1], "attn_heads (one per attention layer)")) ||
      failed(perLayer(getMambaHeads(), counts[0], "mamba_heads (one per Mamba layer)")) ||
      failed(perLayer(getMambaHeadDim(), counts[0], "mamba_head_dim (one per Mamba layer)")) ||
      failed(expectShape(*this, getKeep(), {static_cast<int64_t>(pattern.size())},
                         "keep (one per layer)")))
    return failure();
  return expectSameElementType(*this, getHidden(), getOperation()->getOperands());
}

LogicalResult ResourceLossOp::verify() {
  ArrayRef<double> fractions = getFractions();
  if (fractions.empty() || fractions.front() != 1.0)
    return emitOpError("expects budget fractions starting with the full budget 1.0");
  for (auto [i, f] : llvm::enumerate(fractions)) {
    if (!(f > 0.0 && f <= 1.0))
      return emitOpError() << "budget fraction " << f << " is outside (0, 1]";
    if (i > 0 && f >= fractions[i - 1])
      return emitOpError("expects strictly descending budget fractions");
  }
  if (!(getFullParams().convertToDouble() > 0.0))
    return emitOpError("expects a positive full parameter count");
  if (!(getDeadZone().convertToDouble() >= 0.0) || !(getAnchorWeight().convertToDouble() >= 0.0))
    return emitOpError("expects a non-negative dead zone and anchor weight");
  return expectSameElementType(*this, getParams(), getOperation()->getOperands());
}

#define GET_OP_CLASSES
#include "dialects/elastic/ElasticOps.cpp.inc"
