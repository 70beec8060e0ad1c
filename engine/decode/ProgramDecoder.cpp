//===- ProgramDecoder.cpp - Incremental decoding by a compiled program -----===//
#include "engine/decode/ProgramDecoder.h"
#include "engine/weights/Safetensors.h"

#include <algorithm>
#include <chrono>
#include <cstring>

using namespace nestor;
using namespace nestor::engine;
namespace pg = nestor::program;

struct ProgramDecoder::Impl {
  std::unique_ptr<CpuExecutor> exec;
  std::vector<const void *> args;
  std::vector<std::vector<char>> owned; // state buffers and choice one-hots
  std::vector<std::pair<char *, size_t>> states;
  int32_t token = 0;
  int64_t pos = 0, vocab = 0, context = -1;
};

ProgramDecoder::ProgramDecoder(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
ProgramDecoder::~ProgramDecoder() = default;

Result<std::unique_ptr<ProgramDecoder>>
ProgramDecoder::create(const pg::Function &fn, const WeightFn &weight,
                       const std::map<std::string, std::vector<int64_t>> &choices) {
  auto where = [&](const std::string &what) {
    return Status::error("decode program @" + fn.name() + ": " + what);
  };
  auto exec = CpuExecutor::create(fn);
  if (!exec.ok())
    return exec.status();
  auto impl = std::make_unique<Impl>();
  impl->exec = std::move(*exec);
  impl->args.resize(fn.arguments_size(), nullptr);
  std::map<std::string, bool> used;
  for (auto &[name, _] : choices)
    used[name] = false;
  for (int i = 0; i < fn.arguments_size(); ++i) {
    const pg::Argument &a = fn.arguments(i);
    const pg::TensorType &type = fn.values(a.value()).type();
    int64_t n = numElements(type);
    auto shape = [&]() {
      std::string s;
      for (int64_t d : type.shape())
        s += (s.empty() ? "" : "x") + std::to_string(d);
      return s;
    };
    switch (a.role()) {
    case pg::PARAM: {
      if (type.dtype() != pg::F32)
        return where("the decoder runs float32 programs; '" + a.name() + "' is " +
                     dtypeName(type.dtype()));
      const float *w = weight(a.name(), n);
      if (!w)
        return where("no weight '" + a.name() + "' of shape " + shape());
      impl->args[i] = w;
      break;
    }
    case pg::STATE: {
      impl->owned.emplace_back(tensorBytes(type), 0);
      impl->states.push_back({impl->owned.back().data(), impl->owned.back().size()});
      impl->args[i] = impl->owned.back().data();
      if (a.name().size() > 2 && a.name().compare(a.name().size() - 2, 2, ".k") == 0)
        impl->context = type.shape(1);
      break;
    }
    case pg::INPUT:
    default: {
      if (a.name() == "tokens") {
        if (n != 1)
          return where("the decoder feeds one token of one sequence; tokens are " + shape());
        impl->args[i] = &impl->token;
      } else if (a.name() == "position") {
        impl->args[i] = &impl->pos;
      } else if (a.name().rfind("choice.", 0) == 0) {
        // One-hot rows over the axis' choices.
        std::string axis = a.name().substr(7);
        int64_t k = type.shape(type.shape_size() - 1), rows = n / std::max<int64_t>(k, 1);
        std::vector<int64_t> idx(rows, 0);
        if (auto it = choices.find(axis); it != choices.end()) {
          used[axis] = true;
          if (static_cast<int64_t>(it->second.size()) == 1)
            idx.assign(rows, it->second[0]);
          else if (static_cast<int64_t>(it->second.size()) == rows)
            idx = it->second;
          else
            return where("choice '" + axis + "' has " + std::to_string(it->second.size()) +
                         " entries for " + std::to_string(rows) + " rows");
        }
        impl->owned.emplace_back(tensorBytes(type), 0);
        char *buf = impl->owned.back().data();
        for (int64_t r = 0; r < rows; ++r) {
          if (idx[r] < 0 || idx[r] >= k)
            return where("choice " + std::to_string(idx[r]) + " of '" + axis +
                         "' is not one of its " + std::to_string(k) + " choices");
          if (type.dtype() == pg::F64)
            reinterpret_cast<double *>(buf)[r * k + idx[r]] = 1.0;
          else
            reinterpret_cast<float *>(buf)[r * k + idx[r]] = 1.0f;
        }
        impl->args[i] = buf;
      } else {
        return where("input '" + a.name() + "' is not one a decode step has");
      }
      break;
    }
    }
  }
  for (auto &[name, seen] : used)
    if (!seen)
      return where("the program has no elastic axis '" + name + "'");
  if (fn.results_size() != 1)
    return where("a decode step returns the logits only");
  const pg::TensorType &logits = fn.values(fn.results(0).value()).type();
  if (logits.dtype() != pg::F32)
    return where("the decoder runs float32 programs");
  impl->vocab = logits.shape(logits.shape_size() - 1);
  return std::unique_ptr<ProgramDecoder>(new ProgramDecoder(std::move(impl)));
}

Result<std::unique_ptr<ProgramDecoder>>
ProgramDecoder::create(const pg::Function &fn, const train::TensorMap &weights,
                       const std::map<std::string, std::vector<int64_t>> &choices) {
  for (const Parameter &p : parameters(fn)) {
    auto it = weights.find(p.name);
    if (it != weights.end() && it->second.shape != p.shape)
      return Status::error("decode program @" + fn.name() + ": weight '" + p.name + "' has shape " +
                           shapeString(it->second.shape) + ", the program reads " +
                           shapeString(p.shape));
  }
  auto weight = [&weights](const std::string &name, int64_t numel) -> const float * {
    auto it = weights.find(name);
    return it != weights.end() && static_cast<int64_t>(it->second.data.size()) == numel
               ? it->second.data.data()
               : nullptr;
  };
  return create(fn, WeightFn(weight), choices);
}

void ProgramDecoder::reset() {
  for (auto &[data, bytes] : impl->states)
    std::memset(data, 0, bytes);
  impl->pos = 0;
}

int64_t ProgramDecoder::position() const { return impl->pos; }
int64_t ProgramDecoder::vocabSize() const { return impl->vocab; }
int64_t ProgramDecoder::context() const { return impl->context; }
CpuExecutor &ProgramDecoder::executor() { return *impl->exec; }

Result<const float *> ProgramDecoder::step(int32_t token) {
  if (impl->context >= 0 && impl->pos >= impl->context)
    return Status::error("decode: the context is full (" + std::to_string(impl->context) +
                         " tokens, the KV cache's length)");
  impl->token = token;
  if (Status s = impl->exec->run(impl->args))
    return Status::error("decode at position " + std::to_string(impl->pos) + ": " + s.message());
  ++impl->pos;
  return static_cast<const float *>(impl->exec->result(0));
}

Result<std::vector<int32_t>> ProgramDecoder::greedy(const std::vector<int32_t> &prompt,
                                                    int64_t maxTokens, int32_t stopToken,
                                                    GreedyTimes *times) {
  reset();
  std::vector<int32_t> out;
  if (prompt.empty() || maxTokens <= 0)
    return out;
  auto t0 = std::chrono::steady_clock::now();
  const float *logits = nullptr;
  for (int32_t t : prompt) {
    auto r = step(t);
    if (!r.ok())
      return r.status();
    logits = *r;
  }
  auto t1 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < maxTokens; ++i) {
    int32_t next = static_cast<int32_t>(std::max_element(logits, logits + impl->vocab) - logits);
    out.push_back(next);
    if (next == stopToken || i + 1 == maxTokens)
      break;
    auto r = step(next);
    if (!r.ok())
      return r.status();
    logits = *r;
  }
  if (times) {
    times->prefill = std::chrono::duration<double>(t1 - t0).count();
    times->decode = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  return out;
}

Result<double> ProgramDecoder::benchPass(int64_t steps) {
  reset();
  for (int64_t i = 0; i < kBenchPrompt; ++i)
    if (auto r = step(static_cast<int32_t>((i * 7 + 3) % impl->vocab)); !r.ok())
      return r.status();
  auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i)
    if (auto r = step(static_cast<int32_t>((i * 13 + 5) % impl->vocab)); !r.ok())
      return r.status();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(steps) / seconds;
}
