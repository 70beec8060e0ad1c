//===- ProgramDecoding.cpp - A compiled decode step over loaded weights ----===//
#include "ProgramDecoding.h"

#include "nestor/EmitProgram.h"

using namespace nestor;

llvm::Expected<std::unique_ptr<engine::ProgramDecoder>>
nestor::cli::programDecoder(const program::Function &fn, const train::TensorMap &weights,
                            const std::map<std::string, std::vector<int64_t>> &choices) {
  auto dec = engine::ProgramDecoder::create(fn, weights, choices);
  if (!dec.ok())
    return toError(dec.status());
  return std::move(*dec);
}
