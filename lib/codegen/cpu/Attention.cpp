//===- Attention.cpp - being written ----------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"
