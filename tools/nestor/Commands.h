//===- Commands.h - The nestor driver's subcommands -------------*- C++ -*-===//
//
// Each subcommand registers its options on a CLI11 subcommand and returns the action to run when
// it is chosen. Actions return the process exit code: 0 success, 1 a failure while running, 2 bad
// input (spec, flags, files).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TOOLS_NESTOR_COMMANDS_H
#define NESTOR_TOOLS_NESTOR_COMMANDS_H

#include "nestor/Checkpoint.h"

#include "llvm/Support/Error.h"

#include <functional>
#include <string>

namespace CLI {
class App;
} // namespace CLI

namespace nestor::cli {

using Action = std::function<int()>;

/// Exit code for bad input: a spec that does not parse or validate, bad flags, missing files.
constexpr int kBadInput = 2;

Action addParamsCommand(CLI::App &app);
Action addCompileCommand(CLI::App &app);
Action addBenchCommand(CLI::App &app);
Action addTrainCommand(CLI::App &app);
Action addReportCommand(CLI::App &app);
Action addSliceCommand(CLI::App &app);
Action addExportCommand(CLI::App &app);
Action addImportHfCommand(CLI::App &app);
Action addGenerateCommand(CLI::App &app);
Action addBuildCommand(CLI::App &app);
Action addDevicesCommand(CLI::App &app);

/// Adds the weight loaders' shared flags (--allow-unknown-tensors, --allow-non-finite) to a
/// command that loads model weights.
void addWeightPolicyFlags(CLI::App &app, ckpt::WeightPolicy &policy);
/// --prefill-chunk N: the longest prefill entry point the inference programs get
/// (nestor/Compile.h, prefillChunks); 1 reads prompts token by token.
void addPrefillChunkOption(CLI::App &app, int64_t &chunk);

/// Prints "nestor: error: <message>" to stderr and returns `exitCode`, or kBadInput when the
/// error's code is std::errc::invalid_argument (the libraries' code for refused input).
int reportError(llvm::Error error, int exitCode = kBadInput);

} // namespace nestor::cli

#endif // NESTOR_TOOLS_NESTOR_COMMANDS_H
