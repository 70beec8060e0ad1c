//===- ReportCommand.cpp - `nestor report` ---------------------------------===//
//
// Renders RUN/report.html from RUN/metrics.jsonl and RUN/summary.json (nestor/Report.h), for
// a finished run or one still training (the page then shows the curves so far).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Report.h"

#include "CLI/CLI.hpp"
#include "llvm/Support/FileSystem.h"

#include <iostream>
#include <memory>
#include <string>

using namespace nestor;

cli::Action cli::addReportCommand(CLI::App &app) {
  auto runDir = std::make_shared<std::string>();
  // Checked in the action, for a message as clear as every other input error.
  app.add_option("RUN", *runDir,
                 "Run directory (holds metrics.jsonl, and summary.json once "
                 "training ends)")
      ->required();
  return [runDir]() -> int {
    if (!llvm::sys::fs::is_directory(*runDir))
      return reportError(llvm::createStringError("%s: not a directory (expected a run directory)",
                                                 runDir->c_str()));
    // Every failure here is about the run folder's files: missing, unreadable or malformed.
    auto written = report::writeReport(*runDir);
    if (!written)
      return reportError(written.takeError());
    std::cout << *written << "\n";
    return 0;
  };
}
