//===- ProgramDecoder.cpp - Incremental decoding by a compiled program -----===//
#include "engine/decode/ProgramDecoder.h"
#include "engine/weights/Safetensors.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

using namespace nestor;
using namespace nestor::engine;
namespace pg = nestor::program;

namespace {

/// One entry point bound to the decoder's buffers.
struct Entry {
  std::unique_ptr<CpuExecutor> exec;
  std::vector<const void *> args;
  std::vector<int32_t> tokens; // the tokens argument: 1 (decode step) or C (prefill)
};

/// "256x24"; with the element type, "f32 256x24".
std::string shapeOf(const pg::TensorType &type, bool withType = true) {
  std::string s;
  for (int64_t d : type.shape())
    s += (s.empty() ? "" : "x") + std::to_string(d);
  return withType ? dtypeName(type.dtype()) + std::string(s.empty() ? "" : " ") + s : s;
}

} // namespace

struct ProgramDecoder::Impl {
  std::vector<Entry> entries; // the decode step, then the prefill entry points, longest first
  /// Buffers every entry point shares, by argument name (states and choice one-hots), with the
  /// type the first entry point gave them. std::map: the buffers never move.
  std::map<std::string, std::pair<pg::TensorType, std::vector<char>>> shared;
  std::vector<std::pair<char *, size_t>> states;
  int64_t pos = 0, vocab = 0, context = -1, calls = 0;
  Entry &decode() { return entries.front(); }
  /// Runs `e` on its tokens; the logits of its last token.
  Result<const float *> run(Entry &e);
};

ProgramDecoder::ProgramDecoder(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
ProgramDecoder::~ProgramDecoder() = default;

Result<std::unique_ptr<ProgramDecoder>>
ProgramDecoder::create(const std::vector<const pg::Function *> &functions, const WeightFn &weight,
                       const std::map<std::string, std::vector<int64_t>> &choices) {
  auto impl = std::make_unique<Impl>();
  std::vector<const pg::Function *> ordered;
  for (const pg::Function *fn : functions) {
    if (!fn)
      continue;
    if (fn->name() == kDecodeStep) {
      if (!ordered.empty() && ordered.front()->name() == kDecodeStep)
        return Status::error("decode program: two @decode_step entry points");
      ordered.insert(ordered.begin(), fn);
    } else if (prefillTokens(fn->name()) > 1) {
      ordered.push_back(fn);
    } else {
      return Status::error("decode program: @" + fn->name() +
                           " is no inference entry point (@decode_step, @prefill_<N>)");
    }
  }
  if (ordered.empty() || ordered.front()->name() != kDecodeStep)
    return Status::error("decode program: no @decode_step entry point");
  std::sort(ordered.begin() + 1, ordered.end(), [](const pg::Function *a, const pg::Function *b) {
    return prefillTokens(a->name()) > prefillTokens(b->name());
  });
  for (size_t f = 1; f + 1 < ordered.size(); ++f)
    if (ordered[f]->name() == ordered[f + 1]->name())
      return Status::error("decode program: two @" + ordered[f]->name() + " entry points");

  std::map<std::string, bool> used;
  for (auto &[name, _] : choices)
    used[name] = false;
  for (const pg::Function *fnp : ordered) {
    const pg::Function &fn = *fnp;
    auto where = [&](const std::string &what) {
      return Status::error("decode program @" + fn.name() + ": " + what);
    };
    int64_t tokens = fn.name() == kDecodeStep ? 1 : prefillTokens(fn.name());
    auto exec = CpuExecutor::create(fn);
    if (!exec.ok())
      return exec.status();
    Entry &e = impl->entries.emplace_back();
    e.exec = std::move(*exec);
    e.args.resize(fn.arguments_size(), nullptr);
    e.tokens.assign(tokens, 0);
    /// The buffer all entry points share for argument `name`: made (zero) by the first one,
    /// which `fill` initialises; later ones must give it the same type.
    auto sharedBuffer = [&](const std::string &name, const pg::TensorType &type,
                            bool &made) -> Result<char *> {
      auto [it, inserted] = impl->shared.try_emplace(name);
      made = inserted;
      if (inserted) {
        it->second.first = type;
        it->second.second.assign(tensorBytes(type), 0);
      } else if (it->second.first.dtype() != type.dtype() ||
                 !std::equal(type.shape().begin(), type.shape().end(),
                             it->second.first.shape().begin(), it->second.first.shape().end())) {
        return where("argument '" + name + "' is " + shapeOf(type) + ", in @" +
                     ordered.front()->name() + " " + shapeOf(it->second.first));
      }
      return it->second.second.data();
    };
    for (int i = 0; i < fn.arguments_size(); ++i) {
      const pg::Argument &a = fn.arguments(i);
      const pg::TensorType &type = fn.values(a.value()).type();
      int64_t n = numElements(type);
      switch (a.role()) {
      case pg::PARAM: {
        if (type.dtype() != pg::F32)
          return where("the decoder runs float32 programs; '" + a.name() + "' is " +
                       dtypeName(type.dtype()));
        const float *w = weight(a.name(), n);
        if (!w)
          return where("no weight '" + a.name() + "' of shape " + shapeOf(type, false));
        e.args[i] = w;
        break;
      }
      case pg::STATE: {
        bool made = false;
        auto buf = sharedBuffer("state " + a.name(), type, made);
        if (!buf.ok())
          return buf.status();
        if (made) {
          impl->states.push_back({*buf, tensorBytes(type)});
          if (a.name().size() > 2 && a.name().compare(a.name().size() - 2, 2, ".k") == 0)
            impl->context = type.shape(1);
        }
        e.args[i] = *buf;
        break;
      }
      case pg::INPUT:
      default: {
        if (a.name() == "tokens") {
          if (n != tokens || type.dtype() != pg::I32)
            return where("the tokens of one sequence are i32 " + std::to_string(tokens) +
                         " tokens; the program's are " + shapeOf(type));
          e.args[i] = e.tokens.data();
        } else if (a.name() == "position") {
          e.args[i] = &impl->pos;
        } else if (a.name().rfind("choice.", 0) == 0) {
          // One-hot rows over the axis' choices.
          bool made = false;
          auto buf = sharedBuffer(a.name(), type, made);
          if (!buf.ok())
            return buf.status();
          e.args[i] = *buf;
          if (!made)
            break;
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
          for (int64_t r = 0; r < rows; ++r) {
            if (idx[r] < 0 || idx[r] >= k)
              return where("choice " + std::to_string(idx[r]) + " of '" + axis +
                           "' is not one of its " + std::to_string(k) + " choices");
            if (type.dtype() == pg::F64)
              reinterpret_cast<double *>(*buf)[r * k + idx[r]] = 1.0;
            else
              reinterpret_cast<float *>(*buf)[r * k + idx[r]] = 1.0f;
          }
        } else {
          return where("input '" + a.name() + "' is not one a decode step has");
        }
        break;
      }
      }
    }
    if (fn.results_size() != 1)
      return where("a decode step returns the logits only");
    const pg::TensorType &logits = fn.values(fn.results(0).value()).type();
    if (logits.dtype() != pg::F32 || logits.shape_size() == 0)
      return where("the decoder runs float32 programs");
    int64_t vocab = logits.shape(logits.shape_size() - 1);
    if (numElements(logits) != tokens * vocab)
      return where("the logits are " + shapeOf(logits) + ", not one row per token");
    if (impl->entries.size() == 1)
      impl->vocab = vocab;
    else if (vocab != impl->vocab)
      return where("a vocabulary of " + std::to_string(vocab) + ", @decode_step's is " +
                   std::to_string(impl->vocab));
  }
  // Every entry point must have read the same states and choices: one that lacks a shared
  // buffer would run without it.
  for (size_t f = 0; f < ordered.size(); ++f) {
    std::set<std::string> seen;
    for (const pg::Argument &a : ordered[f]->arguments())
      if (a.role() == pg::STATE)
        seen.insert("state " + a.name());
      else if (a.role() == pg::INPUT && a.name().rfind("choice.", 0) == 0)
        seen.insert(a.name());
    if (seen.size() != impl->shared.size())
      return Status::error("decode program @" + ordered[f]->name() +
                           ": its states and choices are not @decode_step's");
  }
  for (auto &[name, seen] : used)
    if (!seen)
      return Status::error("decode program @" + ordered.front()->name() +
                           ": the program has no elastic axis '" + name + "'");
  return std::unique_ptr<ProgramDecoder>(new ProgramDecoder(std::move(impl)));
}

Result<std::unique_ptr<ProgramDecoder>>
ProgramDecoder::create(const std::vector<const pg::Function *> &functions,
                       const train::TensorMap &weights,
                       const std::map<std::string, std::vector<int64_t>> &choices) {
  for (const pg::Function *fn : functions) {
    if (!fn)
      continue;
    for (const Parameter &p : parameters(*fn)) {
      auto it = weights.find(p.name);
      if (it != weights.end() && it->second.shape != p.shape)
        return Status::error("decode program @" + fn->name() + ": weight '" + p.name +
                             "' has shape " + shapeString(it->second.shape) +
                             ", the program reads " + shapeString(p.shape));
    }
  }
  auto weight = [&weights](const std::string &name, int64_t numel) -> const float * {
    auto it = weights.find(name);
    return it != weights.end() && static_cast<int64_t>(it->second.data.size()) == numel
               ? it->second.data.data()
               : nullptr;
  };
  return create(functions, WeightFn(weight), choices);
}

Result<std::unique_ptr<ProgramDecoder>>
ProgramDecoder::create(const pg::Function &decodeStep, const train::TensorMap &weights,
                       const std::map<std::string, std::vector<int64_t>> &choices) {
  return create(std::vector<const pg::Function *>{&decodeStep}, weights, choices);
}

void ProgramDecoder::reset() {
  for (auto &[data, bytes] : impl->states)
    std::memset(data, 0, bytes);
  impl->pos = 0;
}

int64_t ProgramDecoder::position() const { return impl->pos; }
int64_t ProgramDecoder::vocabSize() const { return impl->vocab; }
int64_t ProgramDecoder::context() const { return impl->context; }
int64_t ProgramDecoder::calls() const { return impl->calls; }
CpuExecutor &ProgramDecoder::executor() { return *impl->decode().exec; }

std::vector<int64_t> ProgramDecoder::prefillChunks() const {
  std::vector<int64_t> out;
  for (size_t i = 1; i < impl->entries.size(); ++i)
    out.push_back(static_cast<int64_t>(impl->entries[i].tokens.size()));
  return out;
}

Result<const float *> ProgramDecoder::Impl::run(Entry &e) {
  int64_t n = static_cast<int64_t>(e.tokens.size());
  if (context >= 0 && pos + n > context)
    return Status::error("decode: the context is full (" + std::to_string(context) +
                         " tokens, the KV cache's length)");
  if (Status s = e.exec->run(e.args))
    return Status::error((n == 1 ? "decode at position " : "prefill at positions ") +
                         std::to_string(pos) + (n == 1 ? "" : ".." + std::to_string(pos + n - 1)) +
                         ": " + s.message());
  pos += n;
  ++calls;
  return static_cast<const float *>(e.exec->result(0)) + (n - 1) * vocab;
}

Result<const float *> ProgramDecoder::step(int32_t token) {
  impl->decode().tokens[0] = token;
  return impl->run(impl->decode());
}

Result<const float *> ProgramDecoder::prefill(const std::vector<int32_t> &tokens,
                                              std::vector<float> *all) {
  int64_t n = static_cast<int64_t>(tokens.size());
  if (impl->context >= 0 && impl->pos + n > impl->context)
    return Status::error("prefill: " + std::to_string(n) + " tokens at position " +
                         std::to_string(impl->pos) + " exceed the context of " +
                         std::to_string(impl->context) + " tokens (the KV cache's length)");
  if (n == 0)
    return Status::error("prefill: no tokens");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= impl->vocab)
      return Status::error("prefill: token " + std::to_string(tokens[i]) + " at index " +
                           std::to_string(i) + " is outside the vocabulary of " +
                           std::to_string(impl->vocab));
  if (all)
    all->clear();
  const float *last = nullptr;
  for (int64_t i = 0; i < n;) {
    // The longest entry point that fits what is left (the decode step always does).
    Entry *e = &impl->decode();
    for (size_t k = 1; k < impl->entries.size(); ++k)
      if (static_cast<int64_t>(impl->entries[k].tokens.size()) <= n - i) {
        e = &impl->entries[k];
        break;
      }
    int64_t c = static_cast<int64_t>(e->tokens.size());
    std::copy_n(tokens.begin() + i, c, e->tokens.begin());
    auto r = impl->run(*e);
    if (!r.ok())
      return r.status();
    if (all)
      all->insert(all->end(), *r - (c - 1) * impl->vocab, *r + impl->vocab);
    last = *r;
    i += c;
  }
  return last;
}

Result<std::vector<int32_t>> ProgramDecoder::greedy(const std::vector<int32_t> &prompt,
                                                    int64_t maxTokens, int32_t stopToken,
                                                    GreedyTimes *times) {
  reset();
  std::vector<int32_t> out;
  if (prompt.empty() || maxTokens <= 0)
    return out;
  auto t0 = std::chrono::steady_clock::now();
  auto first = prefill(prompt);
  if (!first.ok())
    return first.status();
  const float *logits = *first;
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

Result<double> ProgramDecoder::benchPrefill(int64_t tokens) {
  reset();
  std::vector<int32_t> prompt(tokens);
  for (int64_t i = 0; i < tokens; ++i)
    prompt[i] = static_cast<int32_t>((i * 13 + 5) % impl->vocab);
  auto start = std::chrono::steady_clock::now();
  if (auto r = prefill(prompt); !r.ok())
    return r.status();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(tokens) / seconds;
}
