//===- ConvertElasticToKernel.cpp - Lower elastic ops to kernels -----------===//
//
// One conversion pattern per elastic op decomposes it into kernel-dialect ops: GEMMs for the
// projections and fused row/scan/attention kernels for the rest. Backward ops recompute the
// forward intermediates they need with the very same kernel ops the forward emits, so CSE (run
// right after this pass) merges the two: what the forward computed is kept for the backward
// instead of being computed again. The small router/mask/budget ops become `kernel.host` steps.
//
// Masks become `tensor<(n+2)xT>` values; dynamic batch and sequence dimensions become the
// pass's `batch` and `seq-len` (the memory plan needs static sizes). An op whose masks all
// come from hard `elastic.prefix_mask` ops is marked `prefix_dense`.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/elastic/ElasticOps.h"
#include "dialects/kernel/KernelOps.h"

#include "mlir/Dialect/Func/Transforms/FuncConversions.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/DialectConversion.h"

namespace nestor {
#define GEN_PASS_DEF_CONVERTELASTICTOKERNELPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;
namespace el = nestor::elastic;
namespace kn = nestor::kernel;

namespace {

/// True when `mask` (an original elastic value) is null or comes from a hard prefix mask.
bool isHardOrAbsent(Value mask) {
  if (!mask)
    return true;
  auto def = mask.getDefiningOp<el::PrefixMaskOp>();
  return def && def.getMode() == el::MaskMode::Hard;
}

/// True when every given mask is hard and at least one is present.
bool prefixDense(std::initializer_list<Value> masks) {
  bool any = false;
  for (Value m : masks) {
    if (!isHardOrAbsent(m))
      return false;
    any |= static_cast<bool>(m);
  }
  return any;
}

/// Shared helpers of the patterns: types and the GEMM of a linear layer.
struct Builder {
  OpBuilder &b;
  Location loc;
  const TypeConverter &types;

  RankedTensorType like(Value v, int64_t lastDim) const {
    auto t = cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> shape(t.getShape());
    shape.back() = lastDim;
    return RankedTensorType::get(shape, t.getElementType());
  }
  int64_t dim(Value v, int64_t i) const {
    auto t = cast<RankedTensorType>(v.getType());
    return t.getDimSize(i < 0 ? t.getRank() + i : i);
  }
  /// y = x W^T (x [.., in], W [out, in]).
  Value linear(Value x, Value w) const {
    return kn::GemmOp::create(b, loc, like(x, dim(w, 0)), x, w, Value(), Value(),
                              /*transpose_a=*/false, /*transpose_b=*/true, 1)
        .getResult();
  }
  /// dx = dy W (dy [.., out], W [out, in]).
  Value linearInputGrad(Value dy, Value w) const {
    return kn::GemmOp::create(b, loc, like(dy, dim(w, 1)), dy, w, Value(), Value(), false, false, 1)
        .getResult();
  }
  /// dW = dy^T x: [out, in].
  Value linearWeightGrad(Value dy, Value x, Type wType) const {
    return kn::GemmOp::create(b, loc, wType, dy, x, Value(), Value(), true, false, 1).getResult();
  }
  /// y * mask over channel blocks (or y when there is no mask).
  Value mask(Value y, Value mask, int64_t block, int64_t groups, bool dense) const {
    if (!mask)
      return y;
    return kn::MaskOp::create(b, loc, y, mask, block, groups, dense).getResult();
  }
  Type maskGradType(Value mask) const { return mask ? mask.getType() : Type(); }
};

//===----------------------------------------------------------------------===//
// Forward and backward of the layer ops.
//===----------------------------------------------------------------------===//

/// Forward intermediates of a Mamba2 mixer, shared by the forward and backward patterns.
struct MambaForward {
  Value proj, mzx, xbc, y, normed, out;
};

template <typename OpT, typename AdaptorT>
MambaForward mambaForward(const Builder &h, OpT op, AdaptorT a, bool dense) {
  int64_t H = op.getNumHeads(), P = op.getHeadDim(), G = op.getNGroups(), N = op.getStateSize();
  MambaForward f;
  Value x = a.getInput();
  f.proj = h.linear(x, a.getInProj());
  Type elem = cast<RankedTensorType>(x.getType()).getElementType();
  if (a.getHeadsMask() || a.getChannelsMask()) {
    auto m = kn::MambaMaskOp::create(h.b, h.loc, RankedTensorType::get({H * P}, elem),
                                     a.getHeadsMask(), a.getChannelsMask(), H, P, G, N, dense);
    f.mzx = m.getResult();
  }
  int64_t conv = H * P + 2 * G * N;
  auto c = kn::MambaConvOp::create(h.b, h.loc, h.like(x, conv), f.proj, a.getConvWeight(),
                                   a.getConvBias(), f.mzx, H, P, G, N, dense);
  f.xbc = c.getResult();
  auto s =
      kn::MambaScanOp::create(h.b, h.loc, h.like(x, H * P), f.proj, f.xbc, a.getDtBias(),
                              a.getALog(), a.getDSkip(), a.getHeadsMask(), 64, H, P, G, N, dense);
  f.y = s.getResult();
  auto n = kn::MambaGateNormOp::create(h.b, h.loc, h.like(x, H * P), f.y, f.proj, a.getNormWeight(),
                                       f.mzx, a.getHeadsMask(), a.getChannelsMask(),
                                       op.getEpsilon(), H, P, G, N, dense);
  f.normed = n.getResult();
  f.out = h.linear(f.normed, a.getOutProj());
  return f;
}

struct AttentionForward {
  Value q, k, v, a, lse, o, out;
};

template <typename OpT, typename AdaptorT>
AttentionForward attentionForward(const Builder &h, OpT op, AdaptorT ad, bool dense) {
  int64_t nh = op.getNumHeads(), nkv = op.getNumKvHeads(), hd = op.getHeadDim();
  AttentionForward f;
  Value x = ad.getInput();
  f.q = h.linear(x, ad.getQProj());
  f.k = h.linear(x, ad.getKProj());
  f.v = h.linear(x, ad.getVProj());
  auto xt = cast<RankedTensorType>(x.getType());
  auto lseType =
      RankedTensorType::get({xt.getDimSize(0), nh, xt.getDimSize(1)}, xt.getElementType());
  auto attn = kn::AttentionOp::create(h.b, h.loc, f.q.getType(), lseType, f.q, f.k, f.v,
                                      ad.getHeadsMask(), nh, nkv, hd, dense);
  f.a = attn.getResult();
  f.lse = attn.getLse();
  f.o = h.mask(f.a, ad.getHeadsMask(), hd, nkv, dense);
  f.out = h.linear(f.o, ad.getOProj());
  return f;
}

struct MLPForward {
  Value u, act, out;
};

template <typename AdaptorT> MLPForward mlpForward(const Builder &h, AdaptorT ad, bool dense) {
  MLPForward f;
  f.u = h.linear(ad.getInput(), ad.getUpProj());
  f.act = kn::Relu2Op::create(h.b, h.loc, f.u.getType(), f.u, ad.getFfnMask(), dense).getResult();
  f.out = h.linear(f.act, ad.getDownProj());
  return f;
}

/// The hidden-mask backward of a mixer output: (cotangent before the mask, mask cotangent).
std::pair<Value, Value> hiddenMaskGrad(const Builder &h, Value out, Value mask, Value dy,
                                       bool dense) {
  if (!mask)
    return {dy, Value()};
  auto g =
      kn::MaskGradOp::create(h.b, h.loc, out.getType(), mask.getType(), out, mask, dy, 1, 1, dense);
  return {g.getInputGrad(), g.getMaskGrad()};
}

template <typename OpT> struct KernelPattern : OpConversionPattern<OpT> {
  using OpConversionPattern<OpT>::OpConversionPattern;
  using Adaptor = typename OpConversionPattern<OpT>::OpAdaptor;
  Builder helper(ConversionPatternRewriter &rw, OpT op) const {
    return Builder{rw, op.getLoc(), *this->getTypeConverter()};
  }
  Type convert(Type t) const { return this->getTypeConverter()->convertType(t); }
};

struct EmbedLowering : KernelPattern<el::EmbedOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::EmbedOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::EmbedOp>(op, convert(op.getType()), a.getTokens(), a.getTable(),
                                       a.getHiddenMask(), prefixDense({op.getHiddenMask()}));
    return success();
  }
};

struct EmbedGradLowering : KernelPattern<el::EmbedGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::EmbedGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Type maskGrad = op.getHiddenMaskGrad() ? convert(op.getHiddenMaskGrad().getType()) : Type();
    auto k = kn::EmbedGradOp::create(rw, op.getLoc(), a.getTable().getType(), maskGrad,
                                     a.getTokens(), a.getTable(), a.getResultGrad(),
                                     a.getHiddenMask(), prefixDense({op.getHiddenMask()}));
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct RMSNormLowering : KernelPattern<el::RMSNormOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::RMSNormOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::RMSNormOp>(op, convert(op.getType()), a.getInput(), a.getWeight(),
                                         a.getHiddenMask(), op.getEpsilon(),
                                         prefixDense({op.getHiddenMask()}));
    return success();
  }
};

struct RMSNormGradLowering : KernelPattern<el::RMSNormGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::RMSNormGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Type maskGrad = op.getHiddenMaskGrad() ? convert(op.getHiddenMaskGrad().getType()) : Type();
    auto k = kn::RMSNormGradOp::create(rw, op.getLoc(), a.getInput().getType(),
                                       a.getWeight().getType(), maskGrad, a.getInput(),
                                       a.getWeight(), a.getResultGrad(), a.getHiddenMask(),
                                       op.getEpsilon(), prefixDense({op.getHiddenMask()}));
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct MLPLowering : KernelPattern<el::MLPOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::MLPOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    MLPForward f = mlpForward(h, a, prefixDense({op.getFfnMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, prefixDense({op.getHiddenMask()})));
    return success();
  }
};

struct MLPGradLowering : KernelPattern<el::MLPGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::MLPGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool ffnDense = prefixDense({op.getFfnMask()});
    MLPForward f = mlpForward(h, a, ffnDense);
    auto [dz, dHidden] = hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(),
                                        prefixDense({op.getHiddenMask()}));
    Value dDown = h.linearWeightGrad(dz, f.act, a.getDownProj().getType());
    Value dAct = h.linearInputGrad(dz, a.getDownProj());
    auto r = kn::Relu2GradOp::create(rw, op.getLoc(), f.u.getType(), h.maskGradType(a.getFfnMask()),
                                     f.u, dAct, a.getFfnMask(), ffnDense);
    Value du = r.getInputGrad();
    Value dx = h.linearInputGrad(du, a.getUpProj());
    Value dUp = h.linearWeightGrad(du, a.getInput(), a.getUpProj().getType());
    SmallVector<Value> results = {dx, dUp, dDown};
    if (op.getFfnMaskGrad())
      results.push_back(r.getMaskGrad());
    if (op.getHiddenMaskGrad())
      results.push_back(dHidden);
    rw.replaceOp(op, results);
    return success();
  }
};

struct AttentionLowering : KernelPattern<el::AttentionOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::AttentionOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    AttentionForward f = attentionForward(h, op, a, prefixDense({op.getHeadsMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, prefixDense({op.getHiddenMask()})));
    return success();
  }
};

struct AttentionGradLowering : KernelPattern<el::AttentionGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::AttentionGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool headsDense = prefixDense({op.getHeadsMask()});
    AttentionForward f = attentionForward(h, op, a, headsDense);
    auto [dz, dHidden] = hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(),
                                        prefixDense({op.getHiddenMask()}));
    Value dWo = h.linearWeightGrad(dz, f.o, a.getOProj().getType());
    Value dO = h.linearInputGrad(dz, a.getOProj());
    Value da = dO, dHeads;
    if (a.getHeadsMask()) {
      auto g = kn::MaskGradOp::create(rw, op.getLoc(), f.a.getType(), a.getHeadsMask().getType(),
                                      f.a, a.getHeadsMask(), dO, op.getHeadDim(),
                                      op.getNumKvHeads(), headsDense);
      da = g.getInputGrad();
      dHeads = g.getMaskGrad();
    }
    auto g = kn::AttentionGradOp::create(
        rw, op.getLoc(), f.q.getType(), f.k.getType(), f.v.getType(), f.q, f.k, f.v, f.a, f.lse, da,
        a.getHeadsMask(), op.getNumHeads(), op.getNumKvHeads(), op.getHeadDim(), headsDense);
    Value dx = kn::AddOp::create(rw, op.getLoc(), a.getInput().getType(),
                                 ValueRange{h.linearInputGrad(g.getQGrad(), a.getQProj()),
                                            h.linearInputGrad(g.getKGrad(), a.getKProj()),
                                            h.linearInputGrad(g.getVGrad(), a.getVProj())})
                   .getResult();
    SmallVector<Value> results = {
        dx, h.linearWeightGrad(g.getQGrad(), a.getInput(), a.getQProj().getType()),
        h.linearWeightGrad(g.getKGrad(), a.getInput(), a.getKProj().getType()),
        h.linearWeightGrad(g.getVGrad(), a.getInput(), a.getVProj().getType()), dWo};
    if (op.getHeadsMaskGrad())
      results.push_back(dHeads);
    if (op.getHiddenMaskGrad())
      results.push_back(dHidden);
    rw.replaceOp(op, results);
    return success();
  }
};

struct Mamba2Lowering : KernelPattern<el::Mamba2Op> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::Mamba2Op op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    MambaForward f = mambaForward(h, op, a, prefixDense({op.getHeadsMask(), op.getChannelsMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, prefixDense({op.getHiddenMask()})));
    return success();
  }
};

struct Mamba2GradLowering : KernelPattern<el::Mamba2GradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::Mamba2GradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool dense = prefixDense({op.getHeadsMask(), op.getChannelsMask()});
    MambaForward f = mambaForward(h, op, a, dense);
    auto [dz, dHidden] = hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(),
                                        prefixDense({op.getHiddenMask()}));
    Value dWout = h.linearWeightGrad(dz, f.normed, a.getOutProj().getType());
    Value dNormed = h.linearInputGrad(dz, a.getOutProj());
    auto g = kn::MambaInnerGradOp::create(
        rw, op.getLoc(), f.proj.getType(), a.getConvWeight().getType(), a.getConvBias().getType(),
        a.getDtBias().getType(), a.getALog().getType(), a.getDSkip().getType(),
        a.getNormWeight().getType(), h.maskGradType(a.getHeadsMask()),
        h.maskGradType(a.getChannelsMask()), f.proj, f.xbc, f.y, a.getConvWeight(), a.getConvBias(),
        a.getDtBias(), a.getALog(), a.getDSkip(), a.getNormWeight(), dNormed, a.getHeadsMask(),
        a.getChannelsMask(), op.getEpsilon(), 64, op.getNumHeads(), op.getHeadDim(),
        op.getNGroups(), op.getStateSize(), dense);
    Value dProj = g.getProjGrad();
    SmallVector<Value> results = {h.linearInputGrad(dProj, a.getInProj()),
                                  h.linearWeightGrad(dProj, a.getInput(), a.getInProj().getType()),
                                  g.getConvWeightGrad(),
                                  g.getConvBiasGrad(),
                                  g.getDtBiasGrad(),
                                  g.getALogGrad(),
                                  g.getDSkipGrad(),
                                  g.getNormWeightGrad(),
                                  dWout};
    if (op.getHeadsMaskGrad())
      results.push_back(g.getHeadsGrad());
    if (op.getChannelsMaskGrad())
      results.push_back(g.getChannelsGrad());
    if (op.getHiddenMaskGrad())
      results.push_back(dHidden);
    rw.replaceOp(op, results);
    return success();
  }
};

struct DepthGateLowering : KernelPattern<el::DepthGateOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::DepthGateOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::DepthGateOp>(op, a.getResidual(), a.getBlock(), a.getKeep(),
                                           op.getLayerAttr());
    return success();
  }
};

struct DepthGateGradLowering : KernelPattern<el::DepthGateGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::DepthGateGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Type keepGrad = a.getKeep() ? a.getKeep().getType() : Type();
    auto k =
        kn::DepthGateGradOp::create(rw, op.getLoc(), a.getBlock().getType(), keepGrad, a.getBlock(),
                                    a.getResultGrad(), a.getKeep(), op.getLayerAttr());
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct LMHeadLowering : KernelPattern<el::LMHeadOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::LMHeadOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOp(op, helper(rw, op).linear(a.getInput(), a.getWeight()));
    return success();
  }
};

struct LMHeadGradLowering : KernelPattern<el::LMHeadGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::LMHeadGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    rw.replaceOp(op,
                 {h.linearInputGrad(a.getResultGrad(), a.getWeight()),
                  h.linearWeightGrad(a.getResultGrad(), a.getInput(), a.getWeight().getType())});
    return success();
  }
};

struct CrossEntropyLowering : KernelPattern<el::CrossEntropyOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::CrossEntropyOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::CrossEntropyOp>(op, op.getType(), a.getLogits(), a.getTargets(),
                                              op.getIgnoreIndexAttr());
    return success();
  }
};

struct CrossEntropyGradLowering : KernelPattern<el::CrossEntropyGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::CrossEntropyGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::CrossEntropyGradOp>(op, a.getLogits(), a.getTargets(),
                                                  a.getResultGrad(), op.getIgnoreIndexAttr());
    return success();
  }
};

struct KLLowering : KernelPattern<el::KLDistillOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::KLDistillOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::KLOp>(op, op.getType(), a.getStudent(), a.getTeacher(),
                                    op.getTemperatureAttr());
    return success();
  }
};

struct KLGradLowering : KernelPattern<el::KLDistillGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult matchAndRewrite(el::KLDistillGradOp op, Adaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::KLGradOp>(op, a.getStudent(), a.getTeacher(), a.getResultGrad(),
                                        op.getTemperatureAttr());
    return success();
  }
};

struct AddLowering : OpConversionPattern<arith::AddFOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(arith::AddFOp op, OpAdaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::AddOp>(op, a.getLhs().getType(), ValueRange{a.getLhs(), a.getRhs()});
    return success();
  }
};

struct MulLowering : OpConversionPattern<arith::MulFOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult matchAndRewrite(arith::MulFOp op, OpAdaptor a,
                                ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::MulOp>(op, a.getLhs(), a.getRhs());
    return success();
  }
};

/// Wraps one small elastic op into a `kernel.host` step of its own (kernel-fuse merges them).
struct HostLowering : ConversionPattern {
  HostLowering(const TypeConverter &types, MLIRContext *ctx)
      : ConversionPattern(types, MatchAnyOpTypeTag(), /*benefit=*/1, ctx) {}
  LogicalResult matchAndRewrite(Operation *op, ArrayRef<Value> operands,
                                ConversionPatternRewriter &rw) const override {
    if (!isa<el::ElasticDialect>(op->getDialect()) || !isHostOp(op))
      return failure();
    SmallVector<Type> resultTypes;
    if (failed(getTypeConverter()->convertTypes(op->getResultTypes(), resultTypes)))
      return failure();
    auto host = kn::HostOp::create(rw, op->getLoc(), resultTypes, operands);
    Block *body = rw.createBlock(&host.getBody());
    IRMapping map;
    for (auto [orig, conv] : llvm::zip(op->getOperands(), operands))
      map.map(orig, body->addArgument(conv.getType(), op->getLoc()));
    rw.setInsertionPointToStart(body);
    Operation *clone = rw.clone(*op, map);
    kn::YieldOp::create(rw, op->getLoc(), clone->getResults());
    rw.replaceOp(op, host->getResults());
    return success();
  }
  /// The router/mask/budget ops: no activation operand.
  static bool isHostOp(Operation *op) {
    return isa<el::OneHotOp, el::RouterOp, el::GumbelNoiseOp, el::GumbelSoftmaxOp, el::PrefixMaskOp,
               el::LayerKeepOp, el::ExpectedSizeOp, el::ParamCountOp, el::ResourceLossOp,
               el::RouterGradOp, el::GumbelSoftmaxGradOp, el::PrefixMaskGradOp, el::LayerKeepGradOp,
               el::ExpectedSizeGradOp, el::ParamCountGradOp, el::ResourceLossGradOp>(op);
  }
};

struct ConvertElasticToKernelPass
    : nestor::impl::ConvertElasticToKernelPassBase<ConvertElasticToKernelPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    if (batch <= 0 || seqLen <= 0) {
      module.emitError() << "convert-elastic-to-kernel needs batch > 0 and seq-len > 0 (got "
                         << static_cast<int64_t>(batch) << ", " << static_cast<int64_t>(seqLen)
                         << ")";
      return signalPassFailure();
    }
    // The model's float type (the masks' element type): one per module.
    Type floatType;
    bool mixed = false;
    module.walk([&](func::FuncOp f) {
      for (Type t : f.getArgumentTypes())
        if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType())) {
          if (floatType && floatType != rt.getElementType())
            mixed = true;
          floatType = rt.getElementType();
        }
    });
    if (mixed) {
      module.emitError("convert-elastic-to-kernel: functions mix float types; masks need one");
      return signalPassFailure();
    }
    if (!floatType)
      floatType = Float32Type::get(ctx);

    int64_t b = batch, l = seqLen;
    TypeConverter types;
    types.addConversion([](Type t) { return t; });
    types.addConversion([b, l](RankedTensorType t) -> Type {
      SmallVector<int64_t> shape(t.getShape());
      // Activations and tokens are [batch, length, ...]: the only dynamic dims Nestor emits.
      for (auto [i, d] : llvm::enumerate(shape))
        if (ShapedType::isDynamic(d))
          d = i == 0 ? b : l;
      return RankedTensorType::get(shape, t.getElementType());
    });
    types.addConversion([floatType](el::MaskType t) -> Type {
      return RankedTensorType::get({t.getSize() + 2}, floatType);
    });

    ConversionTarget target(*ctx);
    // Elastic ops are legal only as the body of a host step.
    target.addDynamicallyLegalDialect<el::ElasticDialect>(
        [](Operation *op) { return op->getParentOfType<kn::HostOp>() != nullptr; });
    target.addLegalDialect<kn::KernelDialect>();
    target.addIllegalOp<arith::AddFOp, arith::MulFOp>();
    target.addLegalOp<arith::ConstantOp, ModuleOp>();
    target.addDynamicallyLegalOp<func::FuncOp>([&](func::FuncOp f) {
      return types.isSignatureLegal(f.getFunctionType()) && types.isLegal(&f.getBody());
    });
    target.addDynamicallyLegalOp<func::ReturnOp>(
        [&](func::ReturnOp r) { return types.isLegal(r.getOperandTypes()); });

    RewritePatternSet patterns(ctx);
    patterns.add<EmbedLowering, EmbedGradLowering, RMSNormLowering, RMSNormGradLowering,
                 MLPLowering, MLPGradLowering, AttentionLowering, AttentionGradLowering,
                 Mamba2Lowering, Mamba2GradLowering, DepthGateLowering, DepthGateGradLowering,
                 LMHeadLowering, LMHeadGradLowering, CrossEntropyLowering, CrossEntropyGradLowering,
                 KLLowering, KLGradLowering, AddLowering, MulLowering, HostLowering>(types, ctx);
    populateFunctionOpInterfaceTypeConversionPattern<func::FuncOp>(patterns, types);
    populateReturnOpTypeConversionPattern(patterns, types);
    if (failed(applyFullConversion(module, target, std::move(patterns))))
      return signalPassFailure();
    if (!prefixDense)
      module.walk([](Operation *op) {
        if (isa<kn::KernelDialect>(op->getDialect()))
          op->removeAttr("prefix_dense");
      });
  }
};

} // namespace
