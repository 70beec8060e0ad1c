//===- nestor.cpp - The Nestor driver ---------------------------------------===//
//
// One driver with subcommands (DESIGN.md, "The command line"); `--help` works on each.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "CLI/CLI.hpp"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <map>

using namespace nestor::cli;

int nestor::cli::reportError(llvm::Error error, int exitCode) {
  llvm::handleAllErrors(std::move(error), [](const llvm::ErrorInfoBase &info) {
    llvm::WithColor::error(llvm::errs(), "nestor") << info.message() << "\n";
  });
  return exitCode;
}

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  CLI::App app{"Nestor: compiler and runtime for elastic hybrid Mamba2/Attention models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nestor 0.1.0");

  std::map<CLI::App *, Action> actions;
  CLI::App *params =
      app.add_subcommand("params", "Parameter counts of the parent and of each elastic choice");
  actions[params] = addParamsCommand(*params);
  CLI::App *compile = app.add_subcommand("compile", "Run the compiler pipeline and show a stage");
  actions[compile] = addCompileCommand(*compile);
  CLI::App *bench = app.add_subcommand(
      "bench", "Train-step time per budget on the CPU backend, as ratios to the full budget");
  actions[bench] = addBenchCommand(*bench);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kBadInput;
  }
  for (CLI::App *sub : app.get_subcommands())
    return actions.at(sub)();
  return kBadInput;
}
