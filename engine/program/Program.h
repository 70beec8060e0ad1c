//===- Program.h - The program artifact: read, write, validate --*- C++ -*-===//
//
// A Nestor program (engine/program/nestor_program.proto) is what the compiler writes and the
// runtime executes. This layer links neither MLIR nor LLVM: only the C++ standard library,
// protobuf-lite and zlib.
//
// File layout (little-endian):
//   bytes 0-7    magic "NESTORPG"
//   bytes 8-11   format version (kFormatVersion)
//   bytes 12-15  CRC-32 (zlib) of the payload
//   bytes 16-23  payload size in bytes
//   bytes 24-    the serialized nestor.program.Program
// A file of another version, a truncated file, a payload whose checksum differs and a payload
// that does not describe a consistent program (value ids, arena offsets, operand names) are all
// refused with a message naming the file and what is wrong. The CRC detects corruption; it is
// not a signature.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ENGINE_PROGRAM_H
#define NESTOR_ENGINE_PROGRAM_H

#include "engine/Status.h"
#include "engine/program/nestor_program.pb.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nestor::engine {

/// The program file format this build reads and writes. Bump it with any change to the meaning
/// of nestor_program.proto (a new step kind, attribute or storage rule): a runtime must never
/// run a program whose meaning it does not know.
inline constexpr uint32_t kFormatVersion = 2;

/// The bytes of a program file (header + payload).
std::string encodeProgram(const program::Program &program);

/// Parses and validates the bytes of a program file; `name` (the file) prefixes every error.
Result<program::Program> decodeProgram(const std::string &bytes, const std::string &name);

/// Writes `program` to `path` atomically (a temporary file beside it, then rename), so a
/// reader never sees half a program and a failed write leaves what was there.
Status writeProgramFile(const program::Program &program, const std::string &path);

/// Reads, checks and validates the program file at `path`.
Result<program::Program> readProgramFile(const std::string &path);

/// An executable with its program attached (what `nestor build` writes): the runtime
/// executable's bytes, then the program file's bytes (header and payload as above), then a
/// 16-byte trailer: the program file's size (little-endian uint64) and the magic "NESTORAT".
/// The ELF loader ignores bytes past the sections, so the file still runs; `strip` would drop
/// the program, and the executable then says it has none.
std::string attachmentTrailer(uint64_t programFileBytes);

/// The program attached to the file at `path`, or nullopt when it ends in no trailer. A
/// trailer whose size does not fit the file, and an attached program that does not decode, are
/// errors naming `path`.
Result<std::optional<program::Program>> readAttachedProgram(const std::string &path);

/// Checks that every id, offset and name in `program` is consistent, so the executors can
/// trust it: value ids in range, arena buffers inside the arena, constants of the right size,
/// argument ids distinct and dense, known dtypes.
Status validateProgram(const program::Program &program);

/// The function named `name`, or nullptr.
const program::Function *findFunction(const program::Program &program, const std::string &name);

/// The inference entry points (compileInference in nestor/Compile.h writes them, the
/// ProgramDecoder runs them): `@decode_step` appends one token of one sequence, `@prefill_<C>`
/// appends C tokens at once (a prompt in a few calls, at the cost of a forward pass). All share
/// the weights, the state arguments (KV caches, conv windows, SSM states) and the inputs.
inline constexpr const char *kDecodeStep = "decode_step";
std::string prefillEntry(int64_t tokens);
/// The tokens a `@prefill_<C>` entry appends (C), or 0 when `name` is no prefill entry point.
int64_t prefillTokens(const std::string &name);
/// The inference entry points of `program`: `@decode_step` first (nullptr when there is none),
/// then the prefill entry points, longest first.
std::vector<const program::Function *> inferenceFunctions(const program::Program &program);

/// A weight a function reads: its name and shape.
struct Parameter {
  std::string name;
  std::vector<int64_t> shape;
};
/// The PARAM arguments of `fn`, in argument order: the weights a caller must bind.
std::vector<Parameter> parameters(const program::Function &fn);

/// Bytes of one element of `dtype` (i1: one byte).
int64_t elementBytes(program::DType dtype);
/// Number of elements / bytes of a tensor type.
int64_t numElements(const program::TensorType &type);
int64_t tensorBytes(const program::TensorType &type);
/// "f32", "f64", "i32", "i64", "i1".
const char *dtypeName(program::DType dtype);

/// A readable listing of a program (entry points, buffers, steps with their operands and
/// attributes), for `nestor compile --emit program` without -o and for tests.
std::string describeProgram(const program::Program &program);

} // namespace nestor::engine

#endif // NESTOR_ENGINE_PROGRAM_H
