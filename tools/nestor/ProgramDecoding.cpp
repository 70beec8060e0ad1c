//===- ProgramDecoding.cpp - A compiled decode step over loaded weights ----===//
#include "ProgramDecoding.h"

#include "nestor/EmitProgram.h"

using namespace nestor;

llvm::Expected<std::unique_ptr<engine::ProgramDecoder>>
nestor::cli::programDecoder(llvm::ArrayRef<program::Function> functions,
                            const train::TensorMap &weights,
                            const std::map<std::string, std::vector<int64_t>> &choices) {
  std::vector<const program::Function *> entries;
  for (const program::Function &fn : functions)
    entries.push_back(&fn);
  auto dec = engine::ProgramDecoder::create(entries, weights, choices);
  if (!dec.ok())
    return toError(dec.status());
  return std::move(*dec);
}
