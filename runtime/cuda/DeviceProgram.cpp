//===- DeviceProgram.cpp - Run a planned kernel program on a GPU -----------===//
#include "nestor/DeviceProgram.h"

#include "dialects/kernel/KernelOps.h"
#include "nestor/Executor.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>
#include <functional>

using namespace mlir;
using namespace nestor;
using namespace nestor::runtime;
namespace kn = nestor::kernel;

namespace {

using Step = std::function<llvm::Error()>;

std::string describe(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getName().getStringRef() << " at ";
  op->getLoc().print(os);
  return s;
}

} // namespace

struct DeviceProgram::Impl {
  func::FuncOp func;
  KernelDevice *device = nullptr;
  int64_t arenaBytes = 0;
  uint64_t arena = 0;
  llvm::DenseMap<Value, uint64_t> address;
  /// Host copies: constants (for good) and host-step results (refreshed every run).
  llvm::DenseMap<Value, std::vector<char>> mirror;
  llvm::DenseMap<Value, unsigned> argIndex;
  std::vector<const void *> runArgs;
  std::vector<unsigned> writtenArgs; // arguments kernels update in place
  std::vector<bool> bound;           // arguments bound to caller-owned device memory
  std::vector<Step> steps;
  std::vector<Value> results;
  std::vector<std::vector<char>> resultCopies;
  llvm::StringMap<size_t> loaded; // kernel file name -> device handle
  OwningOpRef<ModuleOp> hostModule;
  std::vector<HostStep> hostSteps;

  llvm::Error fail(Operation *op, const llvm::Twine &message) {
    return llvm::createStringError((describe(op) + ": " + message).str().c_str());
  }

  /// The host bytes of `v` for this run: a run argument, a mirror, or a fresh download.
  llvm::Expected<const void *> hostData(Value v, std::vector<char> &downloaded) {
    if (auto it = argIndex.find(v); it != argIndex.end() && !bound[it->second])
      return runArgs[it->second];
    if (auto it = mirror.find(v); it != mirror.end())
      return static_cast<const void *>(it->second.data());
    downloaded.resize(bufferBytes(v.getType()));
    if (llvm::Error e = device->download(downloaded.data(), address.lookup(v), downloaded.size()))
      return e;
    return static_cast<const void *>(downloaded.data());
  }

  llvm::Error bindHost(kn::HostOp op);
  llvm::Error bindKernel(Operation *op);
};

llvm::Error DeviceProgram::Impl::bindHost(kn::HostOp op) {
  auto step = HostStep::create(op, hostModule);
  if (!step)
    return step.takeError();
  for (Value r : op.getResults())
    mirror[r].resize(bufferBytes(r.getType()));
  steps.push_back([this, op, step = std::move(*step)]() mutable -> llvm::Error {
    std::vector<std::vector<char>> downloads(op.getInputs().size());
    std::vector<const void *> in;
    for (auto [i, v] : llvm::enumerate(op.getInputs())) {
      auto data = hostData(v, downloads[i]);
      if (!data)
        return data.takeError();
      in.push_back(*data);
    }
    std::vector<void *> out;
    for (Value r : op.getResults())
      out.push_back(mirror[r].data());
    if (llvm::Error e = step.run(in, out))
      return fail(op, llvm::toString(std::move(e)));
    for (Value r : op.getResults())
      if (llvm::Error e = device->upload(address.lookup(r), mirror[r].data(), mirror[r].size()))
        return e;
    return llvm::Error::success();
  });
  return llvm::Error::success();
}

llvm::Error DeviceProgram::Impl::bindKernel(Operation *op) {
  auto emit = dyn_cast<kn::CudaEmitOpInterface>(op);
  if (!emit)
    return fail(op, "has no CUDA emitter");
  cuda::KernelSource kernel;
  if (failed(emit.emitCuda(kernel)))
    return fail(op, "the CUDA emitter failed");
  std::string name = kernel.fileName();
  size_t handle;
  if (auto it = loaded.find(name); it != loaded.end()) {
    handle = it->second;
  } else {
    auto h = device->load(op, kernel);
    if (!h)
      return fail(op, llvm::toString(h.takeError()));
    handle = loaded[name] = *h;
  }
  std::vector<uint64_t> scratch;
  for (int64_t bytes : kernel.scratchBytes) {
    auto a = device->allocate(std::max<int64_t>(bytes, 1));
    if (!a)
      return a.takeError();
    scratch.push_back(*a);
  }
  for (const cuda::Launch &l : kernel.launches)
    for (const cuda::KernelArg &a : l.args)
      if (a.kind == cuda::KernelArg::Kind::Operand && a.writable)
        if (auto it = argIndex.find(op->getOperand(a.index)); it != argIndex.end())
          writtenArgs.push_back(it->second);

  // A layer the depth router dropped contributes nothing (as on the CPU): zero results, or a
  // GEMM's accumulator passed through.
  int64_t layer = -1;
  Value keep;
  if (auto attr = op->getAttrOfType<IntegerAttr>("kernel.layer")) {
    layer = attr.getInt();
    func.walk([&](kn::DepthGateOp gate) {
      if (gate.getKeep() && !keep)
        keep = gate.getKeep();
    });
    if (!keep)
      return fail(op, "is gated by a layer but the program has no depth gate");
  }
  Value acc;
  if (auto g = dyn_cast<kn::GemmOp>(op))
    acc = g.getAcc();

  steps.push_back([=, kernel = std::move(kernel)]() -> llvm::Error {
    if (keep) {
      std::vector<char> buffer;
      auto k = hostData(keep, buffer);
      if (!k)
        return k.takeError();
      Type t = cast<RankedTensorType>(keep.getType()).getElementType();
      double gamma = t.isF64() ? static_cast<const double *>(*k)[layer]
                               : static_cast<const float *>(*k)[layer];
      if (gamma == 0.0) {
        for (Value r : op->getResults()) {
          uint64_t dst = address.lookup(r);
          size_t n = bufferBytes(r.getType());
          llvm::Error e =
              acc ? (address.lookup(acc) == dst ? llvm::Error::success()
                                                : device->copy(dst, address.lookup(acc), n))
                  : device->fill(dst, 0, n);
          if (e)
            return e;
        }
        return llvm::Error::success();
      }
    }
    for (auto [s, bytes] : llvm::zip(scratch, kernel.scratchBytes))
      if (llvm::Error e = device->fill(s, 0, std::max<int64_t>(bytes, 1)))
        return e;
    for (auto [index, l] : llvm::enumerate(kernel.launches)) {
      std::vector<char> buffer;
      auto values = launchValues(
          op, l,
          [&](cuda::KernelArg::Kind kind, unsigned i) -> uint64_t {
            if (kind == cuda::KernelArg::Kind::Operand)
              return address.lookup(op->getOperand(i));
            if (kind == cuda::KernelArg::Kind::Result)
              return address.lookup(op->getResult(i));
            return scratch.at(i);
          },
          [&](unsigned i) { return hostData(op->getOperand(i), buffer); });
      if (!values)
        return values.takeError();
      std::vector<void *> params;
      for (uint64_t &v : *values)
        params.push_back(&v);
      if (llvm::Error e = device->launch(handle, index, params))
        return fail(op, llvm::toString(std::move(e)));
    }
    // kernel.embed reports the first token outside the vocabulary in its first scratch word
    // (lib/codegen/cuda/emit/Rows.cpp).
    if (auto embed = dyn_cast<kn::EmbedOp>(op); embed && !scratch.empty()) {
      uint64_t word = 0;
      if (llvm::Error e = device->download(&word, scratch[0], sizeof(word)))
        return e;
      if (word != 0) {
        auto rows = cast<RankedTensorType>(embed.getTokens().getType()).getNumElements();
        int64_t row = rows - static_cast<int64_t>(word >> 32);
        int32_t token = static_cast<int32_t>(word & 0xffffffffu);
        int64_t vocab = cast<RankedTensorType>(embed.getTable().getType()).getDimSize(0);
        return fail(op, "token " + llvm::Twine(token) + " at position " + llvm::Twine(row) +
                            " is outside the vocabulary [0, " + llvm::Twine(vocab) + ")");
      }
    }
    return llvm::Error::success();
  });
  return llvm::Error::success();
}

llvm::Expected<std::vector<uint64_t>>
nestor::runtime::launchValues(Operation *op, const cuda::Launch &launch,
                              llvm::function_ref<uint64_t(cuda::KernelArg::Kind, unsigned)> buffer,
                              llvm::function_ref<llvm::Expected<const void *>(unsigned)> maskData) {
  std::vector<uint64_t> values(launch.args.size(), 0);
  for (auto [i, a] : llvm::enumerate(launch.args)) {
    if (a.kind != cuda::KernelArg::Kind::Extent) {
      values[i] = buffer(a.kind, a.index);
      continue;
    }
    auto mask = maskData(a.index);
    if (!mask)
      return mask.takeError();
    auto type = cast<RankedTensorType>(op->getOperand(a.index).getType());
    long long active =
        activePrefix(*mask, type.getElementType(), type.getNumElements() - 2, a.groups);
    std::memcpy(&values[i], &active, sizeof(active));
  }
  return values;
}

DeviceProgram::DeviceProgram(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
DeviceProgram::~DeviceProgram() = default;

llvm::Expected<std::unique_ptr<DeviceProgram>> DeviceProgram::create(func::FuncOp func,
                                                                     KernelDevice &device) {
  cuda::ensureCudaEmitters(*func.getContext());
  auto impl = std::make_unique<Impl>();
  impl->func = func;
  impl->device = &device;
  auto arenaAttr = func->getAttrOfType<IntegerAttr>("kernel.arena_bytes");
  if (!arenaAttr)
    return llvm::createStringError("@%s has no memory plan (run kernel-plan-memory first)",
                                   func.getSymName().str().c_str());
  impl->arenaBytes = arenaAttr.getInt();
  auto arena = device.allocate(std::max<int64_t>(impl->arenaBytes, 256));
  if (!arena)
    return arena.takeError();
  impl->arena = *arena;

  for (BlockArgument arg : func.getArguments()) {
    auto a = device.allocate(std::max<int64_t>(bufferBytes(arg.getType()), 1));
    if (!a)
      return a.takeError();
    impl->address[arg] = *a;
    impl->argIndex[arg] = arg.getArgNumber();
  }
  for (Operation &op : func.front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      for (Value v : ret.getOperands())
        impl->results.push_back(v);
      continue;
    }
    if (auto cst = dyn_cast<arith::ConstantOp>(op)) {
      auto dense = dyn_cast<DenseElementsAttr>(cst.getValue());
      auto type = dyn_cast<RankedTensorType>(cst.getType());
      if (!dense || !type || !isa<FloatType>(type.getElementType()))
        return impl->fail(&op, "only float tensor constants are supported");
      bool f64 = type.getElementType().isF64();
      std::vector<char> &bytes = impl->mirror[cst];
      bytes.resize(bufferBytes(type));
      int64_t i = 0;
      for (APFloat v : dense.getValues<APFloat>()) {
        if (f64)
          reinterpret_cast<double *>(bytes.data())[i++] = v.convertToDouble();
        else
          reinterpret_cast<float *>(bytes.data())[i++] = static_cast<float>(v.convertToDouble());
      }
      auto a = device.allocate(bytes.size());
      if (!a)
        return a.takeError();
      if (llvm::Error e = device.upload(*a, bytes.data(), bytes.size()))
        return e;
      impl->address[cst] = *a;
      continue;
    }
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("kernel.offsets");
    if (op.getNumResults() > 0) {
      if (!offsets || offsets.size() != static_cast<int64_t>(op.getNumResults()))
        return impl->fail(&op, "has no memory plan offsets");
      for (auto [r, offset] : llvm::zip(op.getResults(), offsets.asArrayRef()))
        impl->address[r] = impl->arena + offset;
    }
    llvm::Error e =
        isa<kn::HostOp>(op) ? impl->bindHost(cast<kn::HostOp>(op)) : impl->bindKernel(&op);
    if (e)
      return e;
  }
  impl->bound.assign(func.getNumArguments(), false);
  llvm::sort(impl->writtenArgs);
  impl->writtenArgs.erase(llvm::unique(impl->writtenArgs), impl->writtenArgs.end());
  impl->resultCopies.resize(impl->results.size());
  return std::unique_ptr<DeviceProgram>(new DeviceProgram(std::move(impl)));
}

llvm::Error DeviceProgram::bindArgument(unsigned i, uint64_t address, size_t bytes) {
  func::FuncOp func = impl->func;
  if (i >= func.getNumArguments())
    return llvm::createStringError("@%s has no argument %u", func.getSymName().str().c_str(), i);
  BlockArgument arg = func.getArgument(i);
  if (bytes != static_cast<size_t>(bufferBytes(arg.getType())))
    return llvm::createStringError("argument %u of @%s takes %lld bytes, not %zu", i,
                                   func.getSymName().str().c_str(),
                                   static_cast<long long>(bufferBytes(arg.getType())), bytes);
  impl->address[arg] = address;
  impl->bound[i] = true;
  return llvm::Error::success();
}

llvm::Error DeviceProgram::run(llvm::ArrayRef<const void *> args) {
  func::FuncOp func = impl->func;
  if (args.size() != func.getNumArguments())
    return llvm::createStringError("@%s takes %u arguments, got %zu",
                                   func.getSymName().str().c_str(), func.getNumArguments(),
                                   args.size());
  impl->runArgs.assign(args.begin(), args.end());
  for (BlockArgument arg : func.getArguments())
    if (!impl->bound[arg.getArgNumber()])
      if (llvm::Error e = impl->device->upload(impl->address[arg], args[arg.getArgNumber()],
                                               bufferBytes(arg.getType())))
        return e;
  for (Step &step : impl->steps)
    if (llvm::Error e = step())
      return e;
  if (llvm::Error e = impl->device->synchronize())
    return e;
  for (unsigned i : impl->writtenArgs) {
    if (impl->bound[i])
      continue;
    BlockArgument arg = func.getArgument(i);
    if (llvm::Error e = impl->device->download(const_cast<void *>(args[i]), impl->address[arg],
                                               bufferBytes(arg.getType())))
      return e;
  }
  for (std::vector<char> &copy : impl->resultCopies)
    copy.clear();
  return llvm::Error::success();
}

llvm::Expected<const void *> DeviceProgram::result(unsigned i) {
  if (i >= impl->results.size())
    return llvm::createStringError("result %u of %zu", i, impl->results.size());
  std::vector<char> &copy = impl->resultCopies[i];
  if (copy.empty()) {
    Value v = impl->results[i];
    std::vector<char> scratch;
    auto data = impl->hostData(v, scratch);
    if (!data)
      return data.takeError();
    const char *p = static_cast<const char *>(*data);
    copy.assign(p, p + bufferBytes(v.getType()));
  }
  return static_cast<const void *>(copy.data());
}

unsigned DeviceProgram::numResults() const { return impl->results.size(); }
int64_t DeviceProgram::arenaBytes() const { return impl->arenaBytes; }
size_t DeviceProgram::numKernels() const { return impl->loaded.size(); }
