//===- KernelDialect.cpp - The kernel dialect ------------------------------===//
#include "dialects/kernel/KernelOps.h"

using namespace mlir;
using namespace nestor::kernel;

#include "dialects/kernel/KernelDialect.cpp.inc"

void KernelDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/kernel/KernelOps.cpp.inc"
      >();
}
