//===- SafetensorsFuzzer.cpp - libFuzzer target: the safetensors reader ---===//
//
// Any bytes as a safetensors file: the header length, the strict JSON header, dtypes, shapes
// and byte ranges (the one decoder, engine/weights, that every command and nestor-run use).
//
//===----------------------------------------------------------------------===//
#include "nestor/Checkpoint.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  nestor::ckpt::Metadata metadata;
  auto tensors = nestor::ckpt::decodeSafetensors(bytes, "fuzz.safetensors", &metadata);
  if (!tensors)
    llvm::consumeError(tensors.takeError());
  return 0;
}
