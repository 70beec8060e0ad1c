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

/// True when prefix-dense execution is enabled, every given mask is hard and at least one is
/// present.
bool prefixDense(bool enabled, std::initializer_list<Value> masks) {
  if (!enabled)
    return false;
  bool any = false;
  for (Value m : masks) {
    if (!isHardOrAbsent(m))
      return false;
    any |= static_cast<bool>(m);
  }
  return any;
}

/// The pass's type converter, which also carries the prefix-dense switch to the patterns.
struct KernelTypeConverter : TypeConverter {
  bool prefixDense = true;
  /// Elastic ops that compute (or differentiate) the block of a layer behind a hard depth gate,
  /// with the layer: their kernels carry `kernel.layer` and are skipped when it is dropped.
  llvm::DenseMap<Operation *, int64_t> gatedLayer;
};

/// A GEMM dimension's prefix-dense extent: a (converted) hard mask and its group count.
struct Extent {
  Value mask;
  int64_t groups = 1;
};

/// Shared helpers of the patterns: types and the GEMM of a linear layer.
struct Builder {
  OpBuilder &b;
  Location loc;
  const KernelTypeConverter &types;

  /// The extent of `original` (an elastic mask operand; `converted` its lowered value), when
  /// prefix-dense execution applies to it.
  Extent extent(Value original, Value converted) const {
    if (!original || !prefixDense(types.prefixDense, {original}))
      return {};
    return {converted, cast<el::MaskType>(original.getType()).getGroups()};
  }
  Value gemm(Type type, Value a, Value w, bool ta, bool tb, Extent m, Extent n, Extent k,
             Value nSelect = {}, Value kSelect = {}) const {
    return kn::GemmOp::create(b, loc, type, a, w, Value(), Value(), m.mask, n.mask, k.mask, nSelect,
                              kSelect, ta, tb, 1, m.groups, n.groups, k.groups)
        .getResult();
  }

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
  /// y = x W^T (x [.., in], W [out, in]); `in` and `out` are the extents of the two axes.
  Value linear(Value x, Value w, Extent in = {}, Extent out = {}) const {
    return gemm(like(x, dim(w, 0)), x, w, false, true, {}, out, in);
  }
  /// y = x W^T restricted to the selected input (`inSelect`) or output (`outSelect`) entries.
  Value linearSelected(Value x, Value w, Extent in, Value inSelect, Extent out,
                       Value outSelect) const {
    return gemm(like(x, dim(w, 0)), x, w, false, true, {}, out, in, outSelect, inSelect);
  }
  /// dx = dy W (dy [.., out], W [out, in]).
  Value linearInputGrad(Value dy, Value w, Extent in = {}, Extent out = {}) const {
    return gemm(like(dy, dim(w, 1)), dy, w, false, false, {}, in, out);
  }
  /// dW = dy^T x: [out, in].
  Value linearWeightGrad(Value dy, Value x, Type wType, Extent in = {}, Extent out = {}) const {
    return gemm(wType, dy, x, true, false, out, in, {});
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
  Value outSelect; // out_proj's selected input channels (a decode step's, else null)
};

/// The caller-owned state a decode step continues from (both null: a whole sequence).
struct MambaState {
  Value conv, ssm;
};

template <typename OpT, typename AdaptorT>
MambaForward mambaForward(const Builder &h, OpT op, AdaptorT a, bool dense, MambaState state = {}) {
  int64_t H = op.getNumHeads(), P = op.getHeadDim(), G = op.getNGroups(), N = op.getStateSize();
  MambaForward f;
  Value x = a.getInput();
  Extent hidden = h.extent(op.getHiddenMask(), a.getHiddenMask());
  Type elem = cast<RankedTensorType>(x.getType()).getElementType();
  if (a.getHeadsMask() || a.getChannelsMask()) {
    auto m = kn::MambaMaskOp::create(h.b, h.loc, RankedTensorType::get({H * P}, elem),
                                     a.getHeadsMask(), a.getChannelsMask(), H, P, G, N, dense);
    f.mzx = m.getResult();
  }
  // A decode step at a budget reads only the in_proj rows and out_proj columns of the active
  // heads and channels: at one row per step the projections are weight streaming, and the
  // inactive heads of a prefix-dense budget are no prefix of the rows. (The whole-sequence
  // forward computes every row: its backward reads the projection at full width.)
  if (state.conv && dense && f.mzx) {
    Value rows = kn::MambaProjSelectOp::create(
                     h.b, h.loc, RankedTensorType::get({2 * H * P + 2 * G * N + H}, elem),
                     a.getHeadsMask(), a.getChannelsMask(), H, P, G, N, dense)
                     .getResult();
    f.proj = h.linearSelected(x, a.getInProj(), hidden, {}, {}, rows);
    f.outSelect = f.mzx;
  } else {
    f.proj = h.linear(x, a.getInProj(), hidden);
  }
  int64_t conv = H * P + 2 * G * N;
  if (state.conv) {
    f.xbc = kn::MambaConvStepOp::create(h.b, h.loc, h.like(x, conv), f.proj, a.getConvWeight(),
                                        a.getConvBias(), f.mzx, state.conv, H, P, G, N, dense)
                .getResult();
    f.y = kn::MambaScanStepOp::create(h.b, h.loc, h.like(x, H * P), f.proj, f.xbc, a.getDtBias(),
                                      a.getALog(), a.getDSkip(), a.getHeadsMask(), state.ssm, H, P,
                                      G, N, dense)
              .getResult();
  } else {
    f.xbc = kn::MambaConvOp::create(h.b, h.loc, h.like(x, conv), f.proj, a.getConvWeight(),
                                    a.getConvBias(), f.mzx, H, P, G, N, dense)
                .getResult();
    f.y =
        kn::MambaScanOp::create(h.b, h.loc, h.like(x, H * P), f.proj, f.xbc, a.getDtBias(),
                                a.getALog(), a.getDSkip(), a.getHeadsMask(), 64, H, P, G, N, dense)
            .getResult();
  }
  auto n = kn::MambaGateNormOp::create(h.b, h.loc, h.like(x, H * P), f.y, f.proj, a.getNormWeight(),
                                       f.mzx, a.getHeadsMask(), a.getChannelsMask(),
                                       op.getEpsilon(), H, P, G, N, dense);
  f.normed = n.getResult();
  f.out = h.linearSelected(f.normed, a.getOutProj(), {}, f.outSelect, hidden, {});
  return f;
}

struct AttentionForward {
  Value q, k, v, a, lse, o, out;
};

/// The caller-owned KV cache a decode step writes and reads (all null: a whole sequence).
struct AttentionCache {
  Value k, v, position;
};

template <typename OpT, typename AdaptorT>
AttentionForward attentionForward(const Builder &h, OpT op, AdaptorT ad, bool dense,
                                  AttentionCache cache = {}) {
  int64_t nh = op.getNumHeads(), nkv = op.getNumKvHeads(), hd = op.getHeadDim();
  AttentionForward f;
  Value x = ad.getInput();
  Extent hidden = h.extent(op.getHiddenMask(), ad.getHiddenMask());
  Extent heads = h.extent(op.getHeadsMask(), ad.getHeadsMask());
  f.q = h.linear(x, ad.getQProj(), hidden, heads);
  f.k = h.linear(x, ad.getKProj(), hidden);
  f.v = h.linear(x, ad.getVProj(), hidden);
  if (cache.k) {
    f.a = kn::AttentionStepOp::create(h.b, h.loc, f.q.getType(), f.q, f.k, f.v, cache.k, cache.v,
                                      cache.position, ad.getHeadsMask(), nh, nkv, hd, dense)
              .getResult();
  } else {
    auto xt = cast<RankedTensorType>(x.getType());
    auto lseType =
        RankedTensorType::get({xt.getDimSize(0), nh, xt.getDimSize(1)}, xt.getElementType());
    auto attn = kn::AttentionOp::create(h.b, h.loc, f.q.getType(), lseType, f.q, f.k, f.v,
                                        ad.getHeadsMask(), nh, nkv, hd, dense);
    f.a = attn.getResult();
    f.lse = attn.getLse();
  }
  f.o = h.mask(f.a, ad.getHeadsMask(), hd, nkv, dense);
  f.out = h.linear(f.o, ad.getOProj(), heads, hidden);
  return f;
}

struct MLPForward {
  Value u, act, out;
};

template <typename OpT, typename AdaptorT>
MLPForward mlpForward(const Builder &h, OpT op, AdaptorT ad, bool dense) {
  MLPForward f;
  Extent hidden = h.extent(op.getHiddenMask(), ad.getHiddenMask());
  Extent ffn = h.extent(op.getFfnMask(), ad.getFfnMask());
  f.u = h.linear(ad.getInput(), ad.getUpProj(), hidden, ffn);
  f.act = kn::Relu2Op::create(h.b, h.loc, f.u.getType(), f.u, ad.getFfnMask(), dense).getResult();
  f.out = h.linear(f.act, ad.getDownProj(), ffn, hidden);
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
  const KernelTypeConverter &types() const {
    return static_cast<const KernelTypeConverter &>(*this->getTypeConverter());
  }
  Builder helper(ConversionPatternRewriter &rw, OpT op) const {
    return Builder{rw, op.getLoc(), types()};
  }
  bool dense(std::initializer_list<Value> masks) const {
    return prefixDense(types().prefixDense, masks);
  }
  Type convert(Type t) const { return this->getTypeConverter()->convertType(t); }

  /// Lowers `op`; the kernels it creates inherit the op's depth-gate layer.
  virtual LogicalResult lower(OpT op, Adaptor a, ConversionPatternRewriter &rw) const = 0;
  LogicalResult matchAndRewrite(OpT op, Adaptor a, ConversionPatternRewriter &rw) const final {
    Operation *prev = op->getPrevNode();
    if (failed(lower(op, a, rw)))
      return failure();
    auto it = types().gatedLayer.find(op);
    if (it == types().gatedLayer.end())
      return success();
    Block *block = op->getBlock();
    for (Operation *k = prev ? prev->getNextNode() : &block->front(); k && k != op.getOperation();
         k = k->getNextNode())
      k->setAttr("kernel.layer", rw.getI64IntegerAttr(it->second));
    return success();
  }
};

struct EmbedLowering : KernelPattern<el::EmbedOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::EmbedOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::EmbedOp>(op, convert(op.getType()), a.getTokens(), a.getTable(),
                                       a.getHiddenMask(), dense({op.getHiddenMask()}));
    return success();
  }
};

struct EmbedGradLowering : KernelPattern<el::EmbedGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::EmbedGradOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    Type maskGrad = op.getHiddenMaskGrad() ? convert(op.getHiddenMaskGrad().getType()) : Type();
    auto k = kn::EmbedGradOp::create(rw, op.getLoc(), a.getTable().getType(), maskGrad,
                                     a.getTokens(), a.getTable(), a.getResultGrad(),
                                     a.getHiddenMask(), dense({op.getHiddenMask()}));
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct RMSNormLowering : KernelPattern<el::RMSNormOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::RMSNormOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::RMSNormOp>(op, convert(op.getType()), a.getInput(), a.getWeight(),
                                         a.getHiddenMask(), op.getEpsilon(),
                                         dense({op.getHiddenMask()}));
    return success();
  }
};

struct RMSNormGradLowering : KernelPattern<el::RMSNormGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::RMSNormGradOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    Type maskGrad = op.getHiddenMaskGrad() ? convert(op.getHiddenMaskGrad().getType()) : Type();
    auto k =
        kn::RMSNormGradOp::create(rw, op.getLoc(), a.getInput().getType(), a.getWeight().getType(),
                                  maskGrad, a.getInput(), a.getWeight(), a.getResultGrad(),
                                  a.getHiddenMask(), op.getEpsilon(), dense({op.getHiddenMask()}));
    rw.replaceOp(op, k->getResults());
    return success();
  }
};

struct MLPLowering : KernelPattern<el::MLPOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::MLPOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    MLPForward f = mlpForward(h, op, a, dense({op.getFfnMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, dense({op.getHiddenMask()})));
    return success();
  }
};

struct MLPGradLowering : KernelPattern<el::MLPGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::MLPGradOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool ffnDense = dense({op.getFfnMask()});
    MLPForward f = mlpForward(h, op, a, ffnDense);
    auto [dz, dHidden] =
        hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(), dense({op.getHiddenMask()}));
    Extent hidden = h.extent(op.getHiddenMask(), a.getHiddenMask());
    Extent ffn = h.extent(op.getFfnMask(), a.getFfnMask());
    Value dDown = h.linearWeightGrad(dz, f.act, a.getDownProj().getType(), ffn, hidden);
    Value dAct = h.linearInputGrad(dz, a.getDownProj(), ffn, hidden);
    auto r = kn::Relu2GradOp::create(rw, op.getLoc(), f.u.getType(), h.maskGradType(a.getFfnMask()),
                                     f.u, dAct, a.getFfnMask(), ffnDense);
    Value du = r.getInputGrad();
    Value dx = h.linearInputGrad(du, a.getUpProj(), hidden, ffn);
    Value dUp = h.linearWeightGrad(du, a.getInput(), a.getUpProj().getType(), hidden, ffn);
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
  LogicalResult lower(el::AttentionOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    AttentionForward f = attentionForward(h, op, a, dense({op.getHeadsMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, dense({op.getHiddenMask()})));
    return success();
  }
};

struct AttentionStepLowering : KernelPattern<el::AttentionStepOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::AttentionStepOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    AttentionForward f = attentionForward(h, op, a, dense({op.getHeadsMask()}),
                                          {a.getKCache(), a.getVCache(), a.getPosition()});
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, dense({op.getHiddenMask()})));
    return success();
  }
};

struct AttentionGradLowering : KernelPattern<el::AttentionGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::AttentionGradOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool headsDense = dense({op.getHeadsMask()});
    AttentionForward f = attentionForward(h, op, a, headsDense);
    auto [dz, dHidden] =
        hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(), dense({op.getHiddenMask()}));
    Extent hidden = h.extent(op.getHiddenMask(), a.getHiddenMask());
    Extent heads = h.extent(op.getHeadsMask(), a.getHeadsMask());
    Value dWo = h.linearWeightGrad(dz, f.o, a.getOProj().getType(), heads, hidden);
    Value dO = h.linearInputGrad(dz, a.getOProj(), heads, hidden);
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
    Value dx =
        kn::AddOp::create(rw, op.getLoc(), a.getInput().getType(),
                          ValueRange{h.linearInputGrad(g.getQGrad(), a.getQProj(), hidden, heads),
                                     h.linearInputGrad(g.getKGrad(), a.getKProj(), hidden),
                                     h.linearInputGrad(g.getVGrad(), a.getVProj(), hidden)})
            .getResult();
    SmallVector<Value> results = {
        dx, h.linearWeightGrad(g.getQGrad(), a.getInput(), a.getQProj().getType(), hidden, heads),
        h.linearWeightGrad(g.getKGrad(), a.getInput(), a.getKProj().getType(), hidden),
        h.linearWeightGrad(g.getVGrad(), a.getInput(), a.getVProj().getType(), hidden), dWo};
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
  LogicalResult lower(el::Mamba2Op op, Adaptor a, ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    MambaForward f = mambaForward(h, op, a, dense({op.getHeadsMask(), op.getChannelsMask()}));
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, dense({op.getHiddenMask()})));
    return success();
  }
};

struct Mamba2StepLowering : KernelPattern<el::Mamba2StepOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::Mamba2StepOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    MambaForward f = mambaForward(h, op, a, dense({op.getHeadsMask(), op.getChannelsMask()}),
                                  {a.getConvState(), a.getSsmState()});
    rw.replaceOp(op, h.mask(f.out, a.getHiddenMask(), 1, 1, dense({op.getHiddenMask()})));
    return success();
  }
};

struct Mamba2GradLowering : KernelPattern<el::Mamba2GradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::Mamba2GradOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    Builder h = helper(rw, op);
    bool mixerDense = dense({op.getHeadsMask(), op.getChannelsMask()});
    MambaForward f = mambaForward(h, op, a, mixerDense);
    auto [dz, dHidden] =
        hiddenMaskGrad(h, f.out, a.getHiddenMask(), a.getResultGrad(), dense({op.getHiddenMask()}));
    Extent hidden = h.extent(op.getHiddenMask(), a.getHiddenMask());
    Value dWout = h.linearWeightGrad(dz, f.normed, a.getOutProj().getType(), {}, hidden);
    Value dNormed = h.linearInputGrad(dz, a.getOutProj(), {}, hidden);
    auto g = kn::MambaInnerGradOp::create(
        rw, op.getLoc(), f.proj.getType(), a.getConvWeight().getType(), a.getConvBias().getType(),
        a.getDtBias().getType(), a.getALog().getType(), a.getDSkip().getType(),
        a.getNormWeight().getType(), h.maskGradType(a.getHeadsMask()),
        h.maskGradType(a.getChannelsMask()), f.proj, f.xbc, f.y, a.getConvWeight(), a.getConvBias(),
        a.getDtBias(), a.getALog(), a.getDSkip(), a.getNormWeight(), dNormed, a.getHeadsMask(),
        a.getChannelsMask(), op.getEpsilon(), 64, op.getNumHeads(), op.getHeadDim(),
        op.getNGroups(), op.getStateSize(), mixerDense);
    Value dProj = g.getProjGrad();
    SmallVector<Value> results = {
        h.linearInputGrad(dProj, a.getInProj(), hidden),
        h.linearWeightGrad(dProj, a.getInput(), a.getInProj().getType(), hidden),
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
  LogicalResult lower(el::DepthGateOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::DepthGateOp>(op, a.getResidual(), a.getBlock(), a.getKeep(),
                                           op.getLayerAttr());
    return success();
  }
};

struct DepthGateGradLowering : KernelPattern<el::DepthGateGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::DepthGateGradOp op, Adaptor a,
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
  LogicalResult lower(el::LMHeadOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    rw.replaceOp(op, helper(rw, op).linear(a.getInput(), a.getWeight()));
    return success();
  }
};

struct LMHeadGradLowering : KernelPattern<el::LMHeadGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::LMHeadGradOp op, Adaptor a,
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
  LogicalResult lower(el::CrossEntropyOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::CrossEntropyOp>(op, op.getType(), a.getLogits(), a.getTargets(),
                                              op.getIgnoreIndexAttr());
    return success();
  }
};

struct CrossEntropyGradLowering : KernelPattern<el::CrossEntropyGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::CrossEntropyGradOp op, Adaptor a,
                      ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::CrossEntropyGradOp>(op, a.getLogits(), a.getTargets(),
                                                  a.getResultGrad(), op.getIgnoreIndexAttr());
    return success();
  }
};

struct KLLowering : KernelPattern<el::KLDistillOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::KLDistillOp op, Adaptor a, ConversionPatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<kn::KLOp>(op, op.getType(), a.getStudent(), a.getTeacher(),
                                    op.getTemperatureAttr());
    return success();
  }
};

struct KLGradLowering : KernelPattern<el::KLDistillGradOp> {
  using KernelPattern::KernelPattern;
  LogicalResult lower(el::KLDistillGradOp op, Adaptor a,
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

/// The elastic ops of each layer block behind a hard depth gate: the mixer and its input norm
/// (forward), and the mixer's and the norm's backward ops. When the layer is dropped (keep = 0)
/// their results are exactly zero (the block's cotangent is 0 * dy) or unused (the forward
/// block is multiplied by 0), and the keep cotangent of a dropped layer is never read in hard
/// mode (layer_keep_grad), so the executor can skip them.
llvm::DenseMap<Operation *, int64_t> gatedLayers(ModuleOp module) {
  llvm::DenseMap<Operation *, int64_t> gated;
  auto hardKeep = [](Value keep) {
    auto def = keep ? keep.getDefiningOp<el::LayerKeepOp>() : el::LayerKeepOp();
    return def && def.getMode() == el::MaskMode::Hard;
  };
  auto onlyUsedBy = [&](Operation *op, int64_t layer, Operation *also) {
    for (Operation *user : op->getUsers())
      if (user != also && gated.lookup(user) != layer + 1)
        return false;
    return true;
  };
  // Layers are stored +1 so that lookup's default 0 means "not gated".
  module.walk([&](el::DepthGateOp gate) {
    if (!hardKeep(gate.getKeep()) || !gate.getLayer())
      return;
    int64_t layer = *gate.getLayer();
    Operation *mixer = gate.getBlock().getDefiningOp();
    if (!mixer ||
        !isa<el::Mamba2Op, el::AttentionOp, el::MLPOp, el::Mamba2StepOp, el::AttentionStepOp>(
            mixer))
      return;
    // The block feeds this layer's gate and, in a train step, the gate's backward (d keep).
    for (Operation *user : mixer->getUsers()) {
      auto g = dyn_cast<el::DepthGateOp>(user);
      auto gg = dyn_cast<el::DepthGateGradOp>(user);
      if (!(g && g.getLayer() == gate.getLayer()) && !(gg && gg.getLayer() == gate.getLayer()))
        return;
    }
    gated[mixer] = layer + 1;
  });
  module.walk([&](el::DepthGateGradOp gate) {
    if (!hardKeep(gate.getKeep()) || !gate.getLayer())
      return;
    int64_t layer = *gate.getLayer();
    for (Operation *user : gate.getBlockGrad().getUsers()) {
      if (!isa<el::Mamba2GradOp, el::AttentionGradOp, el::MLPGradOp>(user))
        continue;
      gated[user] = layer + 1;
      // The norm's backward reads the mixer's input cotangent.
      for (Operation *g : user->getResult(0).getUsers())
        if (auto norm = dyn_cast<el::RMSNormGradOp>(g);
            norm && norm.getResultGrad() == user->getResult(0))
          gated[g] = layer + 1;
    }
  });
  // The input norms: used only by their (gated) mixer and its backward.
  module.walk([&](el::RMSNormOp norm) {
    for (Operation *user : norm->getUsers())
      if (int64_t l = gated.lookup(user); l && onlyUsedBy(norm, l - 1, nullptr)) {
        gated[norm] = l;
        return;
      }
  });
  llvm::DenseMap<Operation *, int64_t> out;
  for (auto [op, l] : gated)
    out[op] = l - 1;
  return out;
}

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
    KernelTypeConverter types;
    types.prefixDense = prefixDense;
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

    if (prefixDense)
      types.gatedLayer = gatedLayers(module);

    RewritePatternSet patterns(ctx);
    patterns.add<EmbedLowering, EmbedGradLowering, RMSNormLowering, RMSNormGradLowering,
                 MLPLowering, MLPGradLowering, AttentionLowering, AttentionGradLowering,
                 AttentionStepLowering, Mamba2Lowering, Mamba2StepLowering, Mamba2GradLowering,
                 DepthGateLowering, DepthGateGradLowering, LMHeadLowering, LMHeadGradLowering,
                 CrossEntropyLowering, CrossEntropyGradLowering, KLLowering, KLGradLowering,
                 AddLowering, MulLowering, HostLowering>(types, ctx);
    populateFunctionOpInterfaceTypeConversionPattern<func::FuncOp>(patterns, types);
    populateReturnOpTypeConversionPattern(patterns, types);
    if (failed(applyFullConversion(module, target, std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
