//===- SliceModule.cpp - The dense model of a trained run at one budget ----===//
//
// Imports the elastic spec, binds the trained routers' weights as constants, runs
// elastic-slice{budget}, and reads back the slice map the pass recorded on the dense
// function's weight arguments.
//
//===----------------------------------------------------------------------===//
#include "nestor/Compile.h"

#include "nestor/Import.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/BitVector.h"

using namespace mlir;
using namespace nestor;

namespace {

/// Replaces every `routers.*` parameter of `fn` by a constant holding its trained value.
llvm::Error bindRouters(func::FuncOp fn, const train::TensorMap &weights) {
  OpBuilder b(fn.getContext());
  b.setInsertionPointToStart(&fn.front());
  llvm::BitVector erase(fn.getNumArguments());
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    auto name = fn.getArgAttrOfType<StringAttr>(i, "elastic.param");
    if (!name || !name.getValue().starts_with("routers."))
      continue;
    auto it = weights.find(name.str());
    if (it == weights.end())
      return llvm::createStringError("the checkpoint has no router weight '%s'",
                                     name.str().c_str());
    auto type = cast<RankedTensorType>(fn.getArgument(i).getType());
    if (static_cast<int64_t>(it->second.data.size()) != type.getNumElements())
      return llvm::createStringError("router weight '%s' has %zu values; the spec needs %lld",
                                     name.str().c_str(), it->second.data.size(),
                                     static_cast<long long>(type.getNumElements()));
    SmallVector<APFloat> values;
    const llvm::fltSemantics &sem = cast<FloatType>(type.getElementType()).getFloatSemantics();
    for (float x : it->second.data) {
      APFloat v(x);
      bool lost = false;
      v.convert(sem, APFloat::rmNearestTiesToEven, &lost);
      values.push_back(v);
    }
    Value c = arith::ConstantOp::create(b, fn.getLoc(), type, DenseElementsAttr::get(type, values));
    fn.getArgument(i).replaceAllUsesWith(c);
    erase.set(i);
  }
  if (failed(fn.eraseArguments(erase)))
    return llvm::createStringError("could not remove the bound router arguments");
  return llvm::Error::success();
}

} // namespace

llvm::Expected<DenseModule> nestor::sliceToDense(MLIRContext &context, const spec::ModelSpec &spec,
                                                 const train::TensorMap &weights,
                                                 llvm::StringRef budget,
                                                 llvm::ArrayRef<int64_t> depthOrder) {
  if (!spec.has_elastic())
    return llvm::createStringError("slicing needs an elastic spec; '%s' is dense",
                                   spec.name().c_str());
  ImportOptions options;
  options.depthOrder.assign(depthOrder.begin(), depthOrder.end());
  auto module = importSpec(context, spec, options);
  if (!module)
    return module.takeError();
  DenseModule out;
  out.module = std::move(*module);
  auto elastic = out.module->lookupSymbol<func::FuncOp>("elastic_model");
  if (!elastic)
    return llvm::createStringError("the imported module has no @elastic_model");
  if (llvm::Error e = bindRouters(elastic, weights))
    return e;

  std::string diagnostics;
  {
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
      llvm::raw_string_ostream os(diagnostics);
      os << (diagnostics.empty() ? "" : "\n") << d.str();
      return success();
    });
    PassManager pm(&context);
    ElasticSlicePassOptions slice;
    slice.budget = budget.str();
    pm.addPass(createElasticSlicePass(slice));
    if (failed(pm.run(*out.module)))
      return llvm::createStringError("elastic-slice at budget '%s' failed: %s",
                                     budget.str().c_str(), diagnostics.c_str());
  }
  out.model = out.module->lookupSymbol<func::FuncOp>("elastic_model");
  for (unsigned i = 0; i < out.model.getNumArguments(); ++i) {
    auto name = out.model.getArgAttrOfType<StringAttr>(i, "elastic.param");
    auto source = out.model.getArgAttrOfType<StringAttr>(i, "elastic.slice_of");
    auto runs = out.model.getArgAttrOfType<ArrayAttr>(i, "elastic.slice");
    if (!name)
      continue;
    if (!source || !runs)
      return llvm::createStringError("dense weight '%s' has no slice of the parent",
                                     name.str().c_str());
    slice::TensorSlice s{source.str(), {}};
    for (Attribute dim : runs) {
      ArrayRef<int64_t> r = cast<DenseI64ArrayAttr>(dim).asArrayRef();
      std::vector<int64_t> &indices = s.indices.emplace_back();
      for (size_t k = 0; k + 1 < r.size(); k += 2)
        for (int64_t x = r[k]; x < r[k + 1]; ++x)
          indices.push_back(x);
    }
    out.map[name.str()] = std::move(s);
  }
  return out;
}
