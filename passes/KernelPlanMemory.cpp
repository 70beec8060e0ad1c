//===- KernelPlanMemory.cpp - Static memory plan of a kernel program -------===//
//
// Every tensor a kernel op produces gets a byte offset in one arena, allocated once before
// the first step and reused by every step (a fresh page costs ~6 us to touch on these machines,
// so allocating per step is slow as well as wasteful). A value lives from its defining op to
// its last use in program order (results of the function live to the end); offsets are
// assigned first-fit over the free intervals, in definition order, aligned to 64 bytes (a cache
// line and an AVX-512 register). The arena's size is the program's peak memory.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/kernel/KernelOps.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <map>

namespace nestor {
#define GEN_PASS_DEF_KERNELPLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;

namespace {

constexpr int64_t kAlign = 64;

int64_t bytesOf(Type type) {
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return -1;
  int64_t bits = t.getElementType().getIntOrFloatBitWidth();
  int64_t bytes = t.getNumElements() * std::max<int64_t>(1, bits / 8);
  return (bytes + kAlign - 1) / kAlign * kAlign;
}

/// First-fit allocator over [0, infinity) with coalescing frees.
class Arena {
public:
  int64_t allocate(int64_t size) {
    for (auto it = free.begin(); it != free.end(); ++it)
      if (it->second >= size) {
        int64_t offset = it->first, rest = it->second - size;
        free.erase(it);
        if (rest)
          free[offset + size] = rest;
        return offset;
      }
    // Grow at the end (merging with a free block that touches the end).
    int64_t offset = top;
    if (!free.empty()) {
      auto last = std::prev(free.end());
      if (last->first + last->second == top) {
        offset = last->first;
        free.erase(last);
      }
    }
    top = offset + size;
    peak = std::max(peak, top);
    return offset;
  }
  void release(int64_t offset, int64_t size) {
    auto [it, inserted] = free.emplace(offset, size);
    (void)inserted;
    if (auto next = std::next(it); next != free.end() && offset + size == next->first) {
      it->second += next->second;
      free.erase(next);
    }
    if (it != free.begin())
      if (auto prev = std::prev(it); prev->first + prev->second == it->first) {
        prev->second += it->second;
        free.erase(it);
      }
  }
  int64_t peak = 0;

private:
  std::map<int64_t, int64_t> free; // offset -> size
  int64_t top = 0;
};

struct KernelPlanMemoryPass : nestor::impl::KernelPlanMemoryPassBase<KernelPlanMemoryPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal())
      return;
    Block &body = func.front();
    llvm::DenseMap<Operation *, int64_t> index;
    for (auto [i, op] : llvm::enumerate(body))
      index[&op] = static_cast<int64_t>(i);
    int64_t end = static_cast<int64_t>(index.size());

    // Last use of every planned value, in program order.
    llvm::DenseMap<Value, int64_t> lastUse;
    for (Operation &op : body) {
      for (Value v : op.getOperands())
        lastUse[v] = isa<func::ReturnOp>(op) ? end : std::max(lastUse.lookup(v), index[&op]);
    }
    std::map<int64_t, SmallVector<std::pair<int64_t, int64_t>>> releases; // at op index
    Arena arena;
    Builder b(func.getContext());
    for (Operation &op : body) {
      int64_t i = index[&op];
      // Free what died before this op (its operands stay readable while it runs).
      if (auto it = releases.find(i - 1); it != releases.end())
        for (auto [offset, size] : it->second)
          arena.release(offset, size);
      if (op.getNumResults() == 0 || !isa<nestor::kernel::KernelDialect>(op.getDialect()))
        continue;
      SmallVector<int64_t> offsets;
      for (Value r : op.getResults()) {
        int64_t size = bytesOf(r.getType());
        if (size < 0) {
          op.emitError("kernel-plan-memory needs statically shaped tensors; got ") << r.getType();
          return signalPassFailure();
        }
        int64_t offset = arena.allocate(size);
        offsets.push_back(offset);
        // An unused result dies right after its op.
        releases[std::max(lastUse.lookup(r), i)].push_back({offset, size});
      }
      op.setAttr("kernel.offsets", b.getDenseI64ArrayAttr(offsets));
    }
    func->setAttr("kernel.arena_bytes", b.getI64IntegerAttr(arena.peak));
  }
};

} // namespace
