//===- HostRun.cpp - Run an emitted CUDA kernel on the host ----------------===//
#include "test/unit/cuda/HostRun.h"

#include "lib/codegen/cuda/Nvrtc.h"
#include "nestor/DeviceProgram.h"
#include "nestor/Executor.h"

#include "dialects/kernel/KernelOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/Parser/Parser.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

using namespace mlir;
using namespace nestor::cuda;

#ifndef NESTOR_HOST_EMULATION_HEADER
#error "NESTOR_HOST_EMULATION_HEADER must name cuda_host_emulation.h"
#endif

OwningOpRef<ModuleOp> nestor::cuda::test::parseKernelModule(MLIRContext &context,
                                                            llvm::StringRef ir) {
  DialectRegistry registry;
  registry.insert<kernel::KernelDialect, func::FuncDialect>();
  registerCudaEmitters(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
  return parseSourceString<ModuleOp>(ir, &context);
}

Operation *nestor::cuda::test::firstKernelOp(ModuleOp module) {
  Operation *found = nullptr;
  module.walk([&](Operation *op) {
    if (!found && isa<kernel::KernelDialect>(op->getDialect()))
      found = op;
  });
  return found;
}

llvm::Expected<std::string> nestor::cuda::test::compileToPtx(Operation *op, llvm::StringRef arch) {
  auto emit = dyn_cast<kernel::CudaEmitOpInterface>(op);
  if (!emit)
    return llvm::createStringError("%s has no CUDA emitter",
                                   op->getName().getStringRef().str().c_str());
  KernelSource k;
  if (failed(emit.emitCuda(k)))
    return llvm::createStringError("emitting %s failed",
                                   op->getName().getStringRef().str().c_str());
  CompileRequest request;
  request.name = k.fileName();
  request.source = k.source;
  request.headers = deviceHeaders();
  request.arch = arch.str();
  auto compiled = compile(request);
  if (!compiled)
    return compiled.takeError();
  return compiled->image;
}

static llvm::Error writeText(const llvm::Twine &path, llvm::StringRef text) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path.str(), ec);
  if (ec)
    return llvm::createStringError("%s: %s", path.str().c_str(), ec.message().c_str());
  os << text;
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<test::HostModule>>
test::HostModule::compile(Operation *op, const KernelSource &kernel) {
  std::unique_ptr<HostModule> m(new HostModule());
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nestor-cuda-host", dir))
    return llvm::createStringError("cannot create a temporary directory: %s", ec.message().c_str());
  m->directory = dir.str().str();
  for (const auto &[name, text] : deviceHeaders())
    if (llvm::Error e = writeText(dir + "/" + name, text))
      return e;

  // One launcher per entry: unpacks the parameter array (pointers to values, as cuLaunchKernel
  // takes them) into the entry's parameter types and runs the grid.
  std::string source = kernel.source;
  llvm::raw_string_ostream os(source);
  for (const Launch &l : kernel.launches) {
    std::vector<std::string> types = parameterTypes(op, l);
    os << "\nextern \"C\" void nestor_host_launch_" << l.entry
       << "(void **a, const long long *d) {\n  nestor_emu::launch(d, [&] { " << l.entry << "(";
    for (size_t i = 0; i < types.size(); ++i) {
      os << (i ? ", " : "");
      if (l.args[i].kind == KernelArg::Kind::Extent)
        os << "*static_cast<long long *>(a[" << i << "])";
      else
        os << "(" << types[i] << ")(*static_cast<unsigned long long *>(a[" << i << "]))";
    }
    os << "); });\n}\n";
  }
  std::string cpp = (dir + "/" + kernel.fileName() + ".cpp").str();
  std::string so = (dir + "/kernel.so").str();
  std::string log = (dir + "/compile.log").str();
  if (llvm::Error e = writeText(cpp, source))
    return e;
  auto cxx = llvm::sys::findProgramByName("c++");
  if (!cxx)
    return llvm::createStringError("host emulation: no c++ compiler on PATH");
  std::string include = "-I" + dir.str().str();
  llvm::SmallVector<llvm::StringRef> argv{*cxx,       "-std=c++17",
                                          "-O1",      "-g0",
                                          "-fPIC",    "-shared",
                                          "-pthread", "-Wno-unknown-pragmas",
                                          "-include", NESTOR_HOST_EMULATION_HEADER,
                                          include,    cpp,
                                          "-o",       so};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string err;
  int rc = llvm::sys::ExecuteAndWait(*cxx, argv, std::nullopt, redirects, 0, 0, &err);
  if (rc != 0) {
    auto text = llvm::MemoryBuffer::getFile(log);
    return llvm::createStringError("host emulation: compiling %s failed (%d %s):\n%s",
                                   kernel.fileName().c_str(), rc, err.c_str(),
                                   text ? (*text)->getBuffer().str().c_str() : "");
  }
  m->library = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!m->library)
    return llvm::createStringError("host emulation: dlopen: %s", dlerror());
  for (const Launch &l : kernel.launches) {
    using Launcher = void (*)(void **, const long long *);
    auto fn =
        reinterpret_cast<Launcher>(dlsym(m->library, ("nestor_host_launch_" + l.entry).c_str()));
    if (!fn)
      return llvm::createStringError("host emulation: no entry '%s'", l.entry.c_str());
    m->launchers.push_back(fn);
    m->dims.push_back(
        {l.grid.x, l.grid.y, l.grid.z, l.block.x, l.block.y, l.block.z, l.sharedBytes});
  }
  return m;
}

test::HostModule::~HostModule() {
  if (library)
    dlclose(library);
  if (!directory.empty())
    llvm::sys::fs::remove_directories(directory);
}

void test::HostModule::launch(size_t index, llvm::ArrayRef<void *> params) const {
  launchers.at(index)(const_cast<void **>(params.data()), dims.at(index).data());
}

/// runOnHost's GPU mode (NESTOR_CUDA_TESTS_ON_GPU=1, as scripts/gpu-check.sh sets it): the same
/// kernel, buffers and extents on CUDA device 0, so every emitter test checks the real device.
static llvm::Error runOnGpu(Operation *op, const KernelSource &kernel,
                            llvm::ArrayRef<const void *> operands, llvm::ArrayRef<void *> results) {
  static std::unique_ptr<nestor::runtime::KernelDevice> device;
  if (!device) {
    auto d = nestor::runtime::openCudaKernelDevice(0, "");
    if (!d)
      return llvm::createStringError("NESTOR_CUDA_TESTS_ON_GPU is set, but: %s",
                                     llvm::toString(d.takeError()).c_str());
    device = std::move(*d);
  }
  std::vector<uint64_t> in, out, scratch;
  for (auto [i, v] : llvm::enumerate(op->getOperands())) {
    auto a = device->allocate(std::max<int64_t>(nestor::runtime::bufferBytes(v.getType()), 1));
    if (!a)
      return a.takeError();
    if (operands[i])
      if (llvm::Error e =
              device->upload(*a, operands[i], nestor::runtime::bufferBytes(v.getType())))
        return e;
    in.push_back(*a);
  }
  for (auto [i, v] : llvm::enumerate(op->getResults())) {
    auto a = device->allocate(std::max<int64_t>(nestor::runtime::bufferBytes(v.getType()), 1));
    if (!a)
      return a.takeError();
    // The host buffer's initial contents (NaN-filled by the tests that check every write).
    if (llvm::Error e = device->upload(*a, results[i], nestor::runtime::bufferBytes(v.getType())))
      return e;
    out.push_back(*a);
  }
  for (int64_t bytes : kernel.scratchBytes) {
    auto a = device->allocate(std::max<int64_t>(bytes, 1));
    if (!a)
      return a.takeError();
    scratch.push_back(*a);
  }
  auto handle = device->load(op, kernel);
  if (!handle)
    return handle.takeError();
  for (auto [index, l] : llvm::enumerate(kernel.launches)) {
    auto values = nestor::runtime::launchValues(
        op, l,
        [&](KernelArg::Kind kind, unsigned i) -> uint64_t {
          return kind == KernelArg::Kind::Operand  ? in[i]
                 : kind == KernelArg::Kind::Result ? out[i]
                                                   : scratch.at(i);
        },
        [&](unsigned i) -> llvm::Expected<const void *> { return operands[i]; });
    if (!values)
      return values.takeError();
    std::vector<void *> params;
    for (uint64_t &v : *values)
      params.push_back(&v);
    if (llvm::Error e = device->launch(*handle, index, params))
      return e;
  }
  if (llvm::Error e = device->synchronize())
    return e;
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (llvm::Error e =
            device->download(results[i], out[i], nestor::runtime::bufferBytes(v.getType())))
      return e;
  // In-place operands (kernel.adamw's) come back too.
  for (const Launch &l : kernel.launches)
    for (const KernelArg &a : l.args)
      if (a.kind == KernelArg::Kind::Operand && a.writable && operands[a.index])
        if (llvm::Error e =
                device->download(const_cast<void *>(operands[a.index]), in[a.index],
                                 nestor::runtime::bufferBytes(op->getOperand(a.index).getType())))
          return e;
  return llvm::Error::success();
}

llvm::Error nestor::cuda::test::runOnHost(Operation *op, const KernelSource &kernel,
                                          llvm::ArrayRef<const void *> operands,
                                          llvm::ArrayRef<void *> results) {
  if (operands.size() != op->getNumOperands() || results.size() != op->getNumResults())
    return llvm::createStringError("runOnHost: %zu operand and %zu result buffers for an op with "
                                   "%u and %u",
                                   operands.size(), results.size(), op->getNumOperands(),
                                   op->getNumResults());
  if (const char *gpu = std::getenv("NESTOR_CUDA_TESTS_ON_GPU"); gpu && *gpu && *gpu != '0')
    return runOnGpu(op, kernel, operands, results);
  auto module = HostModule::compile(op, kernel);
  if (!module)
    return module.takeError();
  std::vector<std::vector<unsigned char>> scratch;
  for (int64_t bytes : kernel.scratchBytes)
    scratch.emplace_back(static_cast<size_t>(std::max<int64_t>(bytes, 1)), 0);
  for (auto [index, l] : llvm::enumerate(kernel.launches)) {
    // Host addresses stand for device ones.
    auto values = nestor::runtime::launchValues(
        op, l,
        [&](KernelArg::Kind kind, unsigned i) {
          return kind == KernelArg::Kind::Operand ? reinterpret_cast<uint64_t>(operands[i])
                 : kind == KernelArg::Kind::Result
                     ? reinterpret_cast<uint64_t>(results[i])
                     : reinterpret_cast<uint64_t>(scratch.at(i).data());
        },
        [&](unsigned i) -> llvm::Expected<const void *> { return operands[i]; });
    if (!values)
      return values.takeError();
    std::vector<void *> params;
    for (uint64_t &v : *values)
      params.push_back(&v);
    (*module)->launch(index, params);
  }
  return llvm::Error::success();
}
