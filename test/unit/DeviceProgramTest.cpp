//===- DeviceProgramTest.cpp - The CUDA executor against the CPU executor -===//
//
// A whole train step (forward, losses, every gradient; hard prefix-dense masks, a dropped
// layer) and the optimizer run through DeviceProgram, the CUDA backend's executor, and give what
// the CPU executor gives. On a machine without a GPU the device is the host emulation of the
// CUDA execution model (the emitted kernels compiled for the host); with a GPU the same
// comparison runs on it (CudaDeviceProgramTest, skipped with "no CUDA device" otherwise).
//
//===----------------------------------------------------------------------===//
#include "nestor/DeviceProgram.h"
#include "test/unit/cuda/HostDevice.h"

#include "engine/decode/ProgramDecoder.h"
#include "nestor/Compile.h"
#include "nestor/ParamCount.h"
#include "nestor/Spec.h"
#include "nestor/Train.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mlir;
using namespace nestor;

namespace {

/// A small odd-shaped elastic hybrid: 3 Mamba groups of 2 heads, 3 KV groups, sizes that fill
/// no tile; hard masks (prefix-dense), up to one dropped layer.
spec::ModelSpec smallSpec() {
  spec::ModelSpec spec;
  spec.set_name("device-odd");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*M");
  a->set_hidden_size(18);
  a->set_intermediate_size(22);
  a->set_num_attention_heads(6);
  a->set_num_key_value_heads(3);
  a->set_head_dim(10);
  a->set_mamba_num_heads(6);
  a->set_mamba_head_dim(6);
  a->set_n_groups(3);
  a->set_ssm_state_size(5);
  a->set_conv_kernel(4);
  a->set_vocab_size(37);
  spec::Elastic *e = spec.mutable_elastic();
  for (auto [n, f] : {std::pair{"full", 1.0}, {"small", 0.5}}) {
    auto *b = e->add_budgets();
    b->set_name(n);
    b->set_fraction(f);
  }
  for (int64_t k : {18, 12})
    e->mutable_hidden_size()->add_choices(k);
  for (int64_t k : {22, 13})
    e->mutable_intermediate_size()->add_choices(k);
  for (int64_t k : {6, 3})
    e->mutable_num_attention_heads()->add_choices(k);
  for (int64_t k : {6, 3})
    e->mutable_mamba_num_heads()->add_choices(k);
  for (int64_t k : {6, 4})
    e->mutable_mamba_head_dim()->add_choices(k);
  e->set_max_dropped_layers(1);
  e->set_mask_mode(spec::HARD);
  e->mutable_router()->set_hidden_size(5);
  return spec;
}

/// Random arguments in each argument's element type; the run-time inputs set for `budget`.
struct Args {
  std::vector<std::vector<char>> storage;
  std::vector<const void *> pointers;

  Args(const CompiledStep &step, int32_t budget, bool dropLayer) {
    std::mt19937_64 rng(7);
    std::normal_distribution<double> normal(0.0, 0.4);
    for (const StepArg &a : step.args) {
      std::vector<char> bytes(a.bytes());
      int64_t n = a.numel();
      auto set = [&](int64_t i, double v) {
        if (a.elementType.isF32())
          reinterpret_cast<float *>(bytes.data())[i] = float(v);
        else if (a.elementType.isF64())
          reinterpret_cast<double *>(bytes.data())[i] = v;
        else if (a.elementType.isInteger(32))
          reinterpret_cast<int32_t *>(bytes.data())[i] = int32_t(v);
        else if (a.elementType.isInteger(64))
          reinterpret_cast<int64_t *>(bytes.data())[i] = int64_t(v);
        else
          reinterpret_cast<uint8_t *>(bytes.data())[i] = v != 0;
      };
      for (int64_t i = 0; i < n; ++i) {
        if (a.name == "tokens" || a.name == "targets")
          set(i, double(rng() % 37));
        else if (a.name == "budget")
          set(i, budget);
        else if (a.name == "tau")
          set(i, 1.3);
        else if (a.name == "logit_scale")
          set(i, 2.0);
        else if (a.name == "hard_sample")
          set(i, 0);
        else if (a.name == "seed")
          set(i, 11);
        else if (a.name.rfind("routers.", 0) == 0)
          set(i, 2.5 * normal(rng));
        else
          set(i, normal(rng));
      }
      // Bias the depth router to drop one layer (the least important) at every budget.
      if (dropLayer && a.name == "routers.depth.fc2.bias")
        reinterpret_cast<float *>(bytes.data())[1] += 20.0f;
      storage.push_back(std::move(bytes));
    }
    for (auto &s : storage)
      pointers.push_back(s.data());
  }
};

double asDouble(const void *p, Type t, int64_t i) {
  return t.isF64() ? static_cast<const double *>(p)[i] : static_cast<const float *>(p)[i];
}

/// Runs `step` on the CPU and through `program` on its device; expects every result to agree.
void expectDeviceMatchesCpu(CompiledStep &step, runtime::DeviceProgram &program, int32_t budget,
                            bool dropLayer) {
  Args args(step, budget, dropLayer);
  llvm::Error e = toError(step.program->run(args.pointers));
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  e = program.run(args.pointers);
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  ASSERT_EQ(program.numResults(), step.program->numResults());
  for (unsigned r = 0; r < step.program->numResults(); ++r) {
    auto type = cast<RankedTensorType>(step.step.getResultTypes()[r]);
    auto got = program.result(r);
    ASSERT_TRUE(static_cast<bool>(got)) << llvm::toString(got.takeError());
    const void *want = step.program->result(r);
    double scale = 1e-6, worst = 0;
    for (int64_t i = 0; i < type.getNumElements(); ++i)
      scale = std::max(scale, std::abs(asDouble(want, type.getElementType(), i)));
    for (int64_t i = 0; i < type.getNumElements(); ++i)
      worst = std::max(worst, std::abs(asDouble(*got, type.getElementType(), i) -
                                       asDouble(want, type.getElementType(), i)));
    std::string name = "result " + std::to_string(r);
    if (auto g = step.step.getResultAttrOfType<StringAttr>(r, "elastic.grad_of"))
      name = "grad " + g.getValue().str();
    EXPECT_LE(worst / scale, 2e-4)
        << name << " (budget " << budget << "): max |delta| " << worst << " of max " << scale;
  }
}

/// The train step at the small budget (prefix-dense, a layer dropped) and the full one; then
/// again with the weights bound to device memory uploaded once (how training keeps them).
void expectTrainStepMatchesCpu(CompiledStep &step, runtime::KernelDevice &device) {
  auto program = runtime::DeviceProgram::create(step.step, device);
  ASSERT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
  expectDeviceMatchesCpu(step, **program, 1, /*dropLayer=*/true);
  expectDeviceMatchesCpu(step, **program, 0, /*dropLayer=*/false);
  Args weights(step, 0, /*dropLayer=*/false);
  for (auto [i, a] : llvm::enumerate(step.args)) {
    if (!a.isParam)
      continue;
    auto address = device.allocate(a.bytes());
    ASSERT_TRUE(static_cast<bool>(address)) << llvm::toString(address.takeError());
    llvm::Error e = device.upload(*address, weights.pointers[i], a.bytes());
    ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
    e = (*program)->bindArgument(unsigned(i), *address, a.bytes());
    ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  }
  expectDeviceMatchesCpu(step, **program, 0, /*dropLayer=*/false);
  llvm::Error e = (*program)->bindArgument(0, 0, 3);
  ASSERT_TRUE(static_cast<bool>(e)) << "a binding of the wrong size is refused";
  llvm::consumeError(std::move(e));
}

std::unique_ptr<CompiledStep> compileSmall(MLIRContext &context) {
  StepOptions options;
  options.batch = 1;
  options.seqLen = 19;
  auto step = compileTrainStep(context, smallSpec(), options);
  EXPECT_TRUE(static_cast<bool>(step)) << llvm::toString(step.takeError());
  return step ? std::move(*step) : nullptr;
}

TEST(DeviceProgramTest, TrainStepOnTheHostEmulationMatchesTheCpu) {
  MLIRContext context;
  auto step = compileSmall(context);
  ASSERT_TRUE(step);
  cuda::test::HostDevice device;
  expectTrainStepMatchesCpu(*step, device);
  EXPECT_GT(device.launches(), 50u);
}

TEST(DeviceProgramTest, OptimizerStepUpdatesTheCallersBuffers) {
  MLIRContext context;
  auto step = compileSmall(context);
  ASSERT_TRUE(step);
  std::vector<StepArg> params;
  for (const StepArg &a : step->args)
    if (a.isParam)
      params.push_back(a);
  spec::Optimizer opt;
  auto optimizer = compileOptimizer(context, params, opt);
  ASSERT_TRUE(static_cast<bool>(optimizer)) << llvm::toString(optimizer.takeError());
  auto fn = (*optimizer)->module->lookupSymbol<func::FuncOp>("adamw_step");
  ASSERT_TRUE(fn);
  // params, grads, exp_avg, exp_avg_sq (float32), then two hyper vectors [lr, step, scale].
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  size_t n = params.size();
  std::vector<std::vector<float>> cpu(4 * n), dev;
  for (size_t k = 0; k < 4; ++k)
    for (size_t i = 0; i < n; ++i) {
      cpu[k * n + i].resize(params[i].numel());
      for (float &x : cpu[k * n + i])
        x = k == 3 ? std::abs(normal(rng)) : normal(rng);
    }
  dev = cpu;
  std::vector<double> hyper = {1e-2, 3, 0.5}, hyperRouter = {1e-1, 3, 0.5};
  auto pointers = [&](std::vector<std::vector<float>> &bufs) {
    std::vector<const void *> p;
    for (auto &b : bufs)
      p.push_back(b.data());
    p.push_back(hyper.data());
    p.push_back(hyperRouter.data());
    return p;
  };
  llvm::Error e = toError((*optimizer)->step->run(pointers(cpu)));
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  cuda::test::HostDevice device;
  auto program = runtime::DeviceProgram::create(fn, device);
  ASSERT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
  e = (*program)->run(pointers(dev));
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  // Parameters and both moments are updated in place, in the caller's buffers.
  for (size_t k : {size_t(0), size_t(2), size_t(3)})
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < cpu[k * n + i].size(); ++j)
        ASSERT_NEAR(dev[k * n + i][j], cpu[k * n + i][j], 1e-6 + 1e-5 * std::abs(cpu[k * n + i][j]))
            << params[i].name << " buffer " << k << " entry " << j;
}

TEST(DeviceProgramTest, AnOpWithoutAProgramPlanIsRefused) {
  MLIRContext context;
  auto step = compileSmall(context);
  ASSERT_TRUE(step);
  step->step->removeAttr("kernel.arena_bytes");
  cuda::test::HostDevice device;
  auto program = runtime::DeviceProgram::create(step->step, device);
  ASSERT_FALSE(static_cast<bool>(program));
  EXPECT_NE(llvm::toString(program.takeError()).find("no memory plan"), std::string::npos);
}

/// Two training steps of a Session on the device (train step and teacher there, the optimizer
/// on the host) give the losses and weights the CPU session gives.
TEST(DeviceProgramTest, TrainingSessionOnTheHostEmulationMatchesTheCpu) {
  spec::ModelSpec spec = smallSpec();
  MLIRContext cpuContext, deviceContext;
  cuda::test::HostDevice device;
  auto cpu = train::Session::create(cpuContext, spec, 1, 19);
  ASSERT_TRUE(static_cast<bool>(cpu)) << llvm::toString(cpu.takeError());
  auto dev = train::Session::create(deviceContext, spec, 1, 19, {}, &device);
  ASSERT_TRUE(static_cast<bool>(dev)) << llvm::toString(dev.takeError());
  (*cpu)->weights = train::initParams((*cpu)->params(), spec, 5);
  (*cpu)->teacher = (*cpu)->weights;
  (*dev)->weights = (*cpu)->weights;
  (*dev)->teacher = (*cpu)->teacher;
  std::vector<int32_t> tokens(19), targets(19);
  for (int i = 0; i < 19; ++i)
    tokens[i] = (i * 7 + 3) % 37, targets[i] = (i * 11 + 1) % 37;
  for (int32_t step = 0; step < 2; ++step) {
    train::Session::StepInputs in{tokens.data(), targets.data()};
    in.budget = step;
    in.router = {1.0, 2.0, false};
    in.seed = 3 + step;
    in.lr = 1e-2;
    in.routerLr = 1e-1;
    in.adamStep = step + 1;
    auto a = (*cpu)->step(in);
    ASSERT_TRUE(static_cast<bool>(a)) << llvm::toString(a.takeError());
    auto b = (*dev)->step(in);
    ASSERT_TRUE(static_cast<bool>(b)) << llvm::toString(b.takeError());
    EXPECT_NEAR(b->loss, a->loss, 1e-4 * std::abs(a->loss)) << "step " << step;
    EXPECT_NEAR(b->kd, a->kd, 1e-4 * std::abs(a->kd) + 1e-7) << "step " << step;
    EXPECT_NEAR(b->gradNorm, a->gradNorm, 1e-3 * a->gradNorm) << "step " << step;
  }
  double worst = 0;
  for (const auto &[name, t] : (*cpu)->weights)
    for (size_t i = 0; i < t.data.size(); ++i)
      worst = std::max(worst, double(std::abs(t.data[i] - (*dev)->weights.at(name).data[i])));
  EXPECT_LE(worst, 1e-4) << "the weights after two steps";
}

/// Greedy decoding of a dense (sliced) model on the device writes the tokens of the compiled
/// decode step on the CPU.
void expectGreedyMatchesTheCpuDecoder(runtime::KernelDevice &device) {
  spec::ModelSpec dense = smallSpec();
  dense.clear_elastic();
  MLIRContext context;
  StepOptions options;
  options.batch = 1;
  options.seqLen = 4;
  auto step = compileTrainStep(context, dense, options);
  ASSERT_TRUE(static_cast<bool>(step)) << llvm::toString(step.takeError());
  std::vector<StepArg> params;
  for (const StepArg &a : (*step)->args)
    if (a.isParam)
      params.push_back(a);
  train::TensorMap weights = train::initParams(params, dense, 9);
  for (auto &[name, t] : weights)
    for (float &x : t.data)
      x *= 4.0f; // a sharper distribution: no near-ties between the top logits
  std::vector<int32_t> prompt = {1, 5, 9, 30, 2, 17};
  auto fn = compileDecodeStep(context, dense, static_cast<int64_t>(prompt.size()) + 5);
  ASSERT_TRUE(static_cast<bool>(fn)) << llvm::toString(fn.takeError());
  auto decoder = engine::ProgramDecoder::create(*fn, weights);
  ASSERT_TRUE(decoder.ok()) << decoder.status().message();
  auto want = (*decoder)->greedy(prompt, 5, /*stopToken=*/-1);
  ASSERT_TRUE(want.ok()) << want.status().message();
  MLIRContext deviceContext;
  auto got = runtime::greedyOnDevice(deviceContext, dense, weights, prompt, 5, -1, device);
  ASSERT_TRUE(static_cast<bool>(got)) << llvm::toString(got.takeError());
  EXPECT_EQ(*got, *want);
}

TEST(DeviceProgramTest, GreedyDecodingOnTheHostEmulationMatchesTheCpuDecoder) {
  cuda::test::HostDevice device;
  expectGreedyMatchesTheCpuDecoder(device);
}

TEST(CudaDeviceProgramTest, GreedyDecodingOnTheGpuMatchesTheCpuDecoder) {
  auto device = runtime::openCudaKernelDevice();
  if (!device)
    GTEST_SKIP() << llvm::toString(device.takeError());
  expectGreedyMatchesTheCpuDecoder(**device);
}

TEST(CudaDeviceProgramTest, TrainStepOnTheGpuMatchesTheCpu) {
  auto device = runtime::openCudaKernelDevice();
  if (!device)
    GTEST_SKIP() << llvm::toString(device.takeError());
  MLIRContext context;
  auto step = compileSmall(context);
  ASSERT_TRUE(step);
  expectTrainStepMatchesCpu(*step, **device);
}

} // namespace
