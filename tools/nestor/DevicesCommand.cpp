//===- DevicesCommand.cpp - `nestor devices` --------------------------------===//
//
// Lists the CUDA devices `--device cuda` can use, or says why there is none. Exit code 0 with a
// device, 1 without (scripts and the lit configuration test for a GPU with it).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/CudaDriver.h"
#include "lib/codegen/cuda/Nvrtc.h"
#endif

#include "CLI/CLI.hpp"
#include "fmt/format.h"

#include <iostream>

nestor::cli::Action nestor::cli::addDevicesCommand(CLI::App &app) {
  return []() -> int {
#ifdef NESTOR_HAVE_CUDA
    std::cout << fmt::format("NVRTC {}.{}\n", cuda::nvrtcVersion() / 1000,
                             cuda::nvrtcVersion() % 1000 / 10);
    auto first = cuda::openDevice(0);
    if (!first) {
      std::cout << llvm::toString(first.takeError()) << "\n";
      return 1;
    }
    for (int ordinal = 0;; ++ordinal) {
      auto d = ordinal == 0 ? std::move(first) : cuda::openDevice(ordinal);
      if (!d) {
        llvm::consumeError(d.takeError());
        break;
      }
      std::cout << fmt::format("cuda:{}  {}  {}  {} SMs  {:.1f} GiB\n", ordinal, d->name(),
                               d->arch(), d->multiprocessorCount(),
                               double(d->totalMemory()) / (1024.0 * 1024 * 1024));
    }
    return 0;
#else
    std::cout << "no CUDA device: this nestor was built without the CUDA toolkit (NVRTC)\n";
    return 1;
#endif
  };
}
