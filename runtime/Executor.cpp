//===- Executor.cpp - Helpers of the MLIR-walking CUDA executor ------------===//
//
// What runtime/cuda/DeviceProgram.cpp still needs from planned kernel IR: host steps evaluated
// by the reference interpreter, prefix extents and buffer sizes from MLIR types. The CPU runs
// programs through the runtime (engine/cpu/CpuExecutor.h); the CUDA executor moves there next.
//
//===----------------------------------------------------------------------===//
#include "nestor/Executor.h"

#include "dialects/kernel/KernelOps.h"
#include "engine/cpu/CpuExecutor.h"
#include "nestor/Reference.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace nestor;
using namespace nestor::runtime;
namespace kn = nestor::kernel;

int64_t nestor::runtime::activePrefix(const void *mask, Type element, int64_t entries,
                                      int64_t groups) {
  return engine::activePrefix(mask, element.isF64() ? program::F64 : program::F32, entries, groups);
}

int64_t nestor::runtime::bufferBytes(Type type) {
  auto t = cast<RankedTensorType>(type);
  Type e = t.getElementType();
  return t.getNumElements() *
         (e.isInteger(1) ? 1 : std::max<int64_t>(1, e.getIntOrFloatBitWidth() / 8));
}

llvm::Expected<HostStep> HostStep::create(Operation *op, OwningOpRef<ModuleOp> &module) {
  auto host = dyn_cast<kn::HostOp>(op);
  if (!host)
    return llvm::createStringError("%s is not a kernel.host step",
                                   op->getName().getStringRef().str().c_str());
  // The region becomes a function of the host module, evaluated by the float64 interpreter.
  MLIRContext *ctx = host.getContext();
  if (!module)
    module = ModuleOp::create(UnknownLoc::get(ctx));
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module->getBody());
  Block &body = host.getBody().front();
  SmallVector<Type> resultTypes;
  for (Value v : cast<kn::YieldOp>(body.getTerminator()).getValues())
    resultTypes.push_back(v.getType());
  size_t index = std::distance(module->getBody()->begin(), module->getBody()->end());
  HostStep step;
  step.fn = func::FuncOp::create(b, host.getLoc(), "host" + std::to_string(index),
                                 b.getFunctionType(body.getArgumentTypes(), resultTypes));
  Block *entry = step.fn.addEntryBlock();
  IRMapping map;
  for (auto [from, to] : llvm::zip(body.getArguments(), entry->getArguments()))
    map.map(from, to);
  b.setInsertionPointToStart(entry);
  for (Operation &inner : body.without_terminator())
    b.clone(inner, map);
  SmallVector<Value> rets;
  for (Value v : cast<kn::YieldOp>(body.getTerminator()).getValues())
    rets.push_back(map.lookup(v));
  func::ReturnOp::create(b, host.getLoc(), rets);

  auto port = [&](Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    return Port{std::vector<int64_t>(t.getShape().begin(), t.getShape().end()), t.getElementType()};
  };
  for (Value v : host.getInputs())
    step.ins.push_back(port(v));
  for (Value v : host.getResults())
    step.outs.push_back(port(v));
  return step;
}

llvm::Error HostStep::run(llvm::ArrayRef<const void *> inputs,
                          llvm::ArrayRef<void *> outputs) const {
  if (inputs.size() != ins.size() || outputs.size() != outs.size())
    return llvm::createStringError("host step: %zu inputs and %zu outputs, expected %zu and %zu",
                                   inputs.size(), outputs.size(), ins.size(), outs.size());
  std::vector<ref::Tensor> args;
  for (auto [p, data] : llvm::zip(ins, inputs)) {
    ref::Tensor t(p.shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (p.element.isF32())
        t[i] = static_cast<const float *>(data)[i];
      else if (p.element.isF64())
        t[i] = static_cast<const double *>(data)[i];
      else if (p.element.isInteger(32))
        t[i] = static_cast<const int32_t *>(data)[i];
      else if (p.element.isInteger(64))
        t[i] = static_cast<double>(static_cast<const int64_t *>(data)[i]);
      else
        t[i] = static_cast<const uint8_t *>(data)[i] != 0;
    }
    args.push_back(std::move(t));
  }
  auto results = ref::evaluate(fn, args);
  if (!results)
    return results.takeError();
  for (auto [p, r, data] : llvm::zip(outs, *results, outputs)) {
    for (int64_t i = 0; i < r.numel(); ++i) {
      if (p.element.isF32())
        static_cast<float *>(data)[i] = static_cast<float>(r[i]);
      else
        static_cast<double *>(data)[i] = r[i];
    }
  }
  return llvm::Error::success();
}
