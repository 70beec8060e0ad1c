//===- Compile.cpp - From a spec to a runnable train step ------------------===//
#include "nestor/Compile.h"

#include "engine/program/Program.h"
#include "nestor/Import.h"
#include "passes/Passes.h"

#include "dialects/kernel/KernelOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;
using namespace nestor;

int64_t StepArg::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t StepArg::bytes() const {
  return numel() * std::max<int64_t>(1, elementType.getIntOrFloatBitWidth() / 8);
}

int CompiledStep::argIndex(llvm::StringRef name) const {
  for (auto [i, a] : llvm::enumerate(args))
    if (a.name == name)
      return static_cast<int>(i);
  return -1;
}

StepOptions nestor::defaultStepOptions(const spec::ModelSpec &spec) {
  StepOptions o;
  o.seqLen = 64;
  if (spec.training().stages_size() > 0) {
    o.batch = spec.training().stages(0).batch_size();
    o.seqLen = spec.training().stages(0).sequence_length();
  } else if (spec.training().parent().sequence_length() > 0) {
    o.batch = spec.training().parent().batch_size();
    o.seqLen = spec.training().parent().sequence_length();
  }
  o.batch = std::max<int64_t>(o.batch, 1);
  o.seqLen = std::max<int64_t>(o.seqLen, 1);
  return o;
}

llvm::Expected<OwningOpRef<ModuleOp>> nestor::compileKernels(MLIRContext &context,
                                                             const spec::ModelSpec &spec,
                                                             const StepOptions &options) {
  if (options.batch <= 0 || options.seqLen <= 0)
    return llvm::createStringError("batch and sequence length must be positive");
  ImportOptions importOptions;
  importOptions.float64 = options.float64;
  importOptions.depthOrder = options.depthOrder;
  importOptions.parentLayerKeep = options.parentLayerKeep;
  auto module = importSpec(context, spec, importOptions);
  if (!module)
    return module.takeError();
  PassManager pm(&context);
  TrainStepPipelineOptions train;
  train.function = spec.has_elastic() ? "elastic_model" : "model";
  buildTrainStepPipeline(pm, train);
  KernelPipelineOptions kernels;
  kernels.batch = options.batch;
  kernels.seqLen = options.seqLen;
  kernels.prefixDense = options.prefixDense;
  buildKernelPipeline(pm, kernels);
  if (failed(pm.run(**module)))
    return llvm::createStringError("lowering the train step to kernels failed");
  return std::move(*module);
}

llvm::Expected<std::unique_ptr<CompiledStep>> nestor::compileTrainStep(MLIRContext &context,
                                                                       const spec::ModelSpec &spec,
                                                                       const StepOptions &options) {
  auto module = compileKernels(context, spec, options);
  if (!module)
    return module.takeError();
  auto out = std::make_unique<CompiledStep>();
  out->module = std::move(*module);
  std::string name = spec.has_elastic() ? "elastic_model" : "model";
  out->step = out->module->lookupSymbol<func::FuncOp>(name + "_train_step");
  auto forward = out->module->lookupSymbol<func::FuncOp>(name);
  if (!out->step || !forward)
    return llvm::createStringError("no @%s_train_step after lowering", name.c_str());
  out->numForwardResults = forward.getNumResults();
  for (unsigned i = 0; i < out->step.getNumArguments(); ++i) {
    StepArg a;
    auto type = cast<RankedTensorType>(out->step.getArgument(i).getType());
    a.shape.assign(type.getShape().begin(), type.getShape().end());
    a.elementType = type.getElementType();
    if (auto p = out->step.getArgAttrOfType<StringAttr>(i, "elastic.param")) {
      a.name = p.str();
      a.isParam = true;
    } else if (auto in = out->step.getArgAttrOfType<StringAttr>(i, "elastic.input")) {
      a.name = in.str();
    }
    out->args.push_back(std::move(a));
  }
  auto program = prepareCpu(out->step, static_cast<int>(out->numForwardResults));
  if (!program)
    return program.takeError();
  out->program = std::move(*program);
  return out;
}

llvm::Expected<program::Function>
nestor::compileDecodeStep(MLIRContext &context, const spec::ModelSpec &spec, int64_t contextLength,
                          llvm::ArrayRef<int64_t> depthOrder, int64_t tokens) {
  if (contextLength <= 0)
    return llvm::createStringError("the decode context must be positive (got %lld)",
                                   static_cast<long long>(contextLength));
  if (tokens < 1 || tokens > contextLength)
    return llvm::createStringError("a decode step appends 1 to %lld tokens (the context), not %lld",
                                   static_cast<long long>(contextLength),
                                   static_cast<long long>(tokens));
  ImportOptions importOptions;
  importOptions.decodeContext = contextLength;
  importOptions.depthOrder.assign(depthOrder.begin(), depthOrder.end());
  auto module = importSpec(context, spec, importOptions);
  if (!module)
    return module.takeError();
  PassManager pm(&context);
  KernelPipelineOptions kernels;
  kernels.batch = 1;
  kernels.seqLen = tokens;
  buildKernelPipeline(pm, kernels);
  if (failed(pm.run(**module)))
    return llvm::createStringError("lowering the decode step to kernels failed");
  auto step = (*module)->lookupSymbol<func::FuncOp>(engine::kDecodeStep);
  if (!step)
    return llvm::createStringError("no @decode_step after lowering");
  auto fn = emitProgramFunction(step);
  if (fn && tokens > 1)
    fn->set_name(engine::prefillEntry(tokens));
  return fn;
}

std::vector<int64_t> nestor::prefillChunks(int64_t longestChunk) {
  std::vector<int64_t> out;
  for (int64_t c = longestChunk; c > 1; c /= 16)
    out.push_back(c);
  return out;
}

llvm::Expected<std::vector<program::Function>>
nestor::compileInference(MLIRContext &context, const spec::ModelSpec &spec, int64_t contextLength,
                         llvm::ArrayRef<int64_t> depthOrder, int64_t longestChunk) {
  std::vector<program::Function> out;
  std::vector<int64_t> tokens{1};
  for (int64_t c : prefillChunks(longestChunk))
    if (c <= contextLength)
      tokens.push_back(c);
  for (int64_t n : tokens) {
    auto fn = compileDecodeStep(context, spec, contextLength, depthOrder, n);
    if (!fn)
      return fn.takeError();
    out.push_back(std::move(*fn));
  }
  return out;
}

llvm::Expected<std::unique_ptr<OptimizerProgram>>
nestor::compileOptimizer(MLIRContext &context, llvm::ArrayRef<StepArg> params,
                         const spec::Optimizer &optimizer) {
  context.loadDialect<kernel::KernelDialect, func::FuncDialect>();
  auto out = std::make_unique<OptimizerProgram>();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  out->module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(out->module->getBody());
  SmallVector<Type> types;
  for (const StepArg &p : params)
    types.push_back(RankedTensorType::get(p.shape, p.elementType));

  auto norm = func::FuncOp::create(
      b, loc, "grad_norm", b.getFunctionType(types, {RankedTensorType::get({}, b.getF64Type())}));
  {
    OpBuilder::InsertionGuard guard(b);
    Block *entry = norm.addEntryBlock();
    b.setInsertionPointToStart(entry);
    auto sq = kernel::SquaredNormOp::create(b, loc, RankedTensorType::get({}, b.getF64Type()),
                                            entry->getArguments());
    func::ReturnOp::create(b, loc, sq.getResult());
  }

  auto hyper = RankedTensorType::get({3}, b.getF64Type());
  SmallVector<Type> stepTypes;
  for (int k = 0; k < 4; ++k)
    llvm::append_range(stepTypes, types);
  stepTypes.push_back(hyper);
  stepTypes.push_back(hyper);
  auto step = func::FuncOp::create(b, loc, "adamw_step", b.getFunctionType(stepTypes, {}));
  {
    OpBuilder::InsertionGuard guard(b);
    Block *entry = step.addEntryBlock();
    b.setInsertionPointToStart(entry);
    size_t n = params.size();
    Value hyperModel = entry->getArgument(4 * n), hyperRouter = entry->getArgument(4 * n + 1);
    for (size_t i = 0; i < n; ++i) {
      bool router = llvm::StringRef(params[i].name).starts_with("routers.");
      double wd = params[i].shape.size() >= 2 ? optimizer.weight_decay() : 0.0;
      if (!optimizer.has_weight_decay() && params[i].shape.size() >= 2)
        wd = 0.1;
      kernel::AdamWOp::create(
          b, loc, entry->getArgument(i), entry->getArgument(n + i), entry->getArgument(2 * n + i),
          entry->getArgument(3 * n + i), router ? hyperRouter : hyperModel,
          b.getF64FloatAttr(optimizer.has_beta1() ? optimizer.beta1() : 0.9),
          b.getF64FloatAttr(optimizer.has_beta2() ? optimizer.beta2() : 0.95),
          b.getF64FloatAttr(optimizer.has_epsilon() ? optimizer.epsilon() : 1e-8),
          b.getF64FloatAttr(wd));
    }
    func::ReturnOp::create(b, loc);
  }
  if (failed(verify(*out->module)))
    return llvm::createStringError("the optimizer program does not verify");
  PassManager pm(&context);
  pm.addNestedPass<func::FuncOp>(createKernelPlanMemoryPass());
  if (failed(pm.run(*out->module)))
    return llvm::createStringError("planning the optimizer program failed");
  auto normProgram = prepareCpu(norm);
  if (!normProgram)
    return normProgram.takeError();
  auto stepProgram = prepareCpu(step);
  if (!stepProgram)
    return stepProgram.takeError();
  out->gradNorm = std::move(*normProgram);
  out->step = std::move(*stepProgram);
  return out;
}
