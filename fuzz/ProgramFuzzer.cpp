//===- ProgramFuzzer.cpp - libFuzzer target: the program file reader ------===//
//
// Any bytes as a program file (`nestor compile --emit program`, what nestor-run loads): the
// envelope (magic, version, checksum), the protobuf, and the structural validation of buffers,
// kernels and launches, then the description nestor-run prints.
//
//===----------------------------------------------------------------------===//
#include "engine/program/Program.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string bytes(reinterpret_cast<const char *>(data), size);
  auto program = nestor::engine::decodeProgram(bytes, "fuzz.program");
  if (!program.ok())
    return 0;
  if (!nestor::engine::validateProgram(*program).ok())
    return 0;
  (void)nestor::engine::describeProgram(*program);
  for (const auto &fn : program->functions())
    (void)nestor::engine::parameters(fn);
  return 0;
}
