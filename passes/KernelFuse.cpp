//===- KernelFuse.cpp - Fuse kernel-dialect ops ----------------------------===//
//
// The fusion decisions of the kernel program, each a rewrite pattern:
//  - mask epilogue: `kernel.mask(kernel.gemm)` becomes one GEMM whose epilogue multiplies the
//    columns, when the GEMM's raw result has no other use (a backward op that needs the raw
//    projection, e.g. for the mask cotangent, keeps the two apart);
//  - accumulate: a single-use GEMM feeding a `kernel.add` accumulates into the add's other
//    input (beta = 1): the input cotangent of attention, dq Wq + dk Wk + dv Wv, is three GEMMs
//    into one buffer;
//  - add chains: `add(add(a, b), c)` with a single-use inner add is one n-ary add (one pass);
//  - host steps: neighbouring `kernel.host` steps merge into one, so the routers, masks and
//    budget losses of a step run as one host call.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/kernel/KernelOps.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace nestor {
#define GEN_PASS_DEF_KERNELFUSEPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;
namespace kn = nestor::kernel;

namespace {

struct FuseMaskEpilogue : OpRewritePattern<kn::MaskOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(kn::MaskOp mask, PatternRewriter &rw) const override {
    auto gemm = mask.getInput().getDefiningOp<kn::GemmOp>();
    if (!gemm || gemm.getMask() || !gemm->hasOneUse() || mask.getGroups() != 1)
      return failure();
    rw.modifyOpInPlace(gemm, [&] {
      gemm.getMaskMutable().assign(mask.getMask());
      gemm.setMaskBlock(mask.getBlock());
    });
    rw.replaceOp(mask, gemm.getResult());
    return success();
  }
};

struct FuseAccumulate : OpRewritePattern<kn::AddOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(kn::AddOp add, PatternRewriter &rw) const override {
    SmallVector<Value> inputs(add.getInputs());
    // A GEMM that can take the running sum as its accumulator.
    auto foldable = [&](Value v) {
      auto g = v.getDefiningOp<kn::GemmOp>();
      return g && !g.getAcc() && !g.getMask() && g->hasOneUse() ? g : kn::GemmOp();
    };
    auto it = llvm::find_if(inputs, [&](Value v) { return static_cast<bool>(foldable(v)); });
    if (it == inputs.end())
      return failure();
    kn::GemmOp gemm = foldable(*it);
    inputs.erase(it);
    // The accumulator: the other inputs, summed first when there are several.
    Value acc = inputs.size() == 1
                    ? inputs.front()
                    : kn::AddOp::create(rw, add.getLoc(), add.getType(), inputs).getResult();
    // The GEMM moves to the add (its accumulator may be defined after it).
    rw.moveOpBefore(gemm, add);
    rw.modifyOpInPlace(gemm, [&] { gemm.getAccMutable().assign(acc); });
    rw.replaceOp(add, gemm.getResult());
    return success();
  }
};

struct FuseAddChain : OpRewritePattern<kn::AddOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(kn::AddOp add, PatternRewriter &rw) const override {
    SmallVector<Value> flat;
    bool changed = false;
    for (Value v : add.getInputs()) {
      auto inner = v.getDefiningOp<kn::AddOp>();
      if (inner && inner->hasOneUse()) {
        llvm::append_range(flat, inner.getInputs());
        changed = true;
      } else {
        flat.push_back(v);
      }
    }
    if (!changed)
      return failure();
    rw.replaceOpWithNewOp<kn::AddOp>(add, add.getType(), flat);
    return success();
  }
};

struct MergeHostSteps : OpRewritePattern<kn::HostOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(kn::HostOp second, PatternRewriter &rw) const override {
    auto first = dyn_cast_or_null<kn::HostOp>(second->getPrevNode());
    if (!first)
      return failure();
    // Inputs of the merged step: the first's, then the second's that the first does not make.
    SmallVector<Value> inputs(first.getInputs());
    for (Value v : second.getInputs())
      if (v.getDefiningOp() != first && !llvm::is_contained(inputs, v))
        inputs.push_back(v);
    SmallVector<Type> types(first.getResultTypes());
    llvm::append_range(types, second.getResultTypes());
    auto merged = kn::HostOp::create(rw, first.getLoc(), types, inputs);
    Block *body = rw.createBlock(&merged.getBody());
    IRMapping map;
    for (Value v : inputs)
      body->addArgument(v.getType(), v.getLoc());
    auto argOf = [&](Value outer) {
      return body->getArgument(llvm::find(inputs, outer) - inputs.begin());
    };
    rw.setInsertionPointToStart(body);
    SmallVector<Value> yields;
    for (auto [arg, outer] : llvm::zip(first.getBody().getArguments(), first.getInputs()))
      map.map(arg, argOf(outer));
    Block &firstBody = first.getBody().front();
    for (Operation &op : firstBody.without_terminator())
      rw.clone(op, map);
    auto firstYield = cast<kn::YieldOp>(firstBody.getTerminator());
    for (Value v : firstYield.getValues())
      yields.push_back(map.lookupOrDefault(v));
    for (auto [arg, outer] : llvm::zip(second.getBody().getArguments(), second.getInputs())) {
      if (auto r = dyn_cast<OpResult>(outer); r && r.getOwner() == first)
        map.map(arg, yields[r.getResultNumber()]);
      else
        map.map(arg, argOf(outer));
    }
    Block &secondBody = second.getBody().front();
    for (Operation &op : secondBody.without_terminator())
      rw.clone(op, map);
    for (Value v : cast<kn::YieldOp>(secondBody.getTerminator()).getValues())
      yields.push_back(map.lookupOrDefault(v));
    kn::YieldOp::create(rw, first.getLoc(), yields);
    unsigned n = first.getNumResults();
    rw.replaceOp(first, merged.getResults().take_front(n));
    rw.replaceOp(second, merged.getResults().drop_front(n));
    return success();
  }
};

struct KernelFusePass : nestor::impl::KernelFusePassBase<KernelFusePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseMaskEpilogue, FuseAccumulate, FuseAddChain, MergeHostSteps>(&getContext());
    GreedyRewriteConfig config;
    // Fusion must not reorder the program: patterns only merge ops in place.
    config.setUseTopDownTraversal(true);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns), config)))
      signalPassFailure();
  }
};

} // namespace
