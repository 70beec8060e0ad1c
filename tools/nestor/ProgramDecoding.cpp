//===- ProgramDecoding.cpp - A compiled decode step over loaded weights ----===//
#include "ProgramDecoding.h"

#include "nestor/EmitProgram.h"

using namespace nestor;

llvm::Expected<std::unique_ptr<engine::ProgramDecoder>>
nestor::cli::programDecoder(const program::Function &fn, const train::TensorMap &weights,
                            const std::map<std::string, std::vector<int64_t>> &choices) {
  auto weight = [&weights](const std::string &name, int64_t numel) -> const float * {
    auto it = weights.find(name);
    return it != weights.end() && int64_t(it->second.data.size()) == numel ? it->second.data.data()
                                                                           : nullptr;
  };
  auto dec = engine::ProgramDecoder::create(fn, weight, choices);
  if (!dec.ok())
    return toError(dec.status());
  return std::move(*dec);
}
