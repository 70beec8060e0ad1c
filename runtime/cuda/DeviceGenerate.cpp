//===- DeviceGenerate.cpp - Greedy decoding of a dense model on a device ---===//
#include "nestor/DeviceProgram.h"

#include "nestor/Compile.h"

#include "mlir/IR/BuiltinOps.h"

#include <algorithm>

using namespace mlir;
using namespace nestor;
using namespace nestor::runtime;

llvm::Expected<std::vector<int32_t>>
nestor::runtime::greedyOnDevice(MLIRContext &context, const spec::ModelSpec &dense,
                                const train::TensorMap &weights, const std::vector<int32_t> &prompt,
                                int64_t maxTokens, int32_t stopToken, KernelDevice &device) {
  if (dense.has_elastic())
    return llvm::createStringError("greedyOnDevice serves dense models; slice the budget first");
  if (prompt.empty() || maxTokens <= 0)
    return llvm::createStringError("greedyOnDevice needs a prompt and at least one token");
  int64_t length = static_cast<int64_t>(prompt.size()) + maxTokens;
  StepOptions options;
  options.batch = 1;
  options.seqLen = length;
  auto module = compileKernels(context, dense, options);
  if (!module)
    return module.takeError();
  auto forward = (*module)->lookupSymbol<func::FuncOp>("model");
  if (!forward)
    return llvm::createStringError("the dense module has no @model");
  auto program = DeviceProgram::create(forward, device);
  if (!program)
    return program.takeError();

  // The weights go to the device once; tokens and targets every step.
  std::vector<int32_t> tokens(length, 0), targets(length, 0);
  std::vector<const void *> args(forward.getNumArguments(), nullptr);
  int64_t vocab = dense.architecture().vocab_size();
  for (unsigned i = 0; i < forward.getNumArguments(); ++i) {
    if (auto input = forward.getArgAttrOfType<StringAttr>(i, "elastic.input")) {
      args[i] = input.getValue() == "tokens" ? tokens.data() : targets.data();
      continue;
    }
    auto name = forward.getArgAttrOfType<StringAttr>(i, "elastic.param");
    if (!name)
      return llvm::createStringError("argument %u of @model is neither input nor parameter", i);
    auto it = weights.find(name.str());
    auto type = cast<RankedTensorType>(forward.getArgument(i).getType());
    if (it == weights.end() ||
        static_cast<int64_t>(it->second.data.size()) != type.getNumElements())
      return llvm::createStringError("the weights have no tensor '%s' of %lld values",
                                     name.str().c_str(),
                                     static_cast<long long>(type.getNumElements()));
    size_t bytes = it->second.data.size() * sizeof(float);
    auto address = device.allocate(bytes);
    if (!address)
      return address.takeError();
    if (llvm::Error e = device.upload(*address, it->second.data.data(), bytes))
      return e;
    if (llvm::Error e = (*program)->bindArgument(i, *address, bytes))
      return e;
  }

  std::copy(prompt.begin(), prompt.end(), tokens.begin());
  int64_t filled = static_cast<int64_t>(prompt.size());
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < maxTokens) {
    if (llvm::Error e = (*program)->run(args))
      return e;
    auto logits = (*program)->result(0);
    if (!logits)
      return logits.takeError();
    const float *row = static_cast<const float *>(*logits) + (filled - 1) * vocab;
    int32_t next = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    out.push_back(next);
    if (next == stopToken)
      break;
    tokens[filled++] = next;
  }
  return out;
}
