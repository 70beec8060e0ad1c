//===- EmitProgram.cpp - Planned kernel IR to the program artifact ---------===//
//
// The operand and result names of each kernel op come from its ODS accessors (one table below,
// the runtime's view of the kernel dialect); attributes are serialised generically from the
// op's attribute dictionary with the ODS defaults filled in, so a new attribute needs no code
// here unless its kind is new.
//
//===----------------------------------------------------------------------===//
#include "nestor/EmitProgram.h"

#include "dialects/elastic/ElasticOps.h"
#include "dialects/elastic/ElasticTypes.h"
#include "dialects/kernel/KernelOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace nestor;
namespace kn = nestor::kernel;
namespace el = nestor::elastic;
namespace pg = nestor::program;

std::string nestor::programGenerator() { return "nestor 0.1.0"; }

llvm::Error nestor::toError(const engine::Status &status) {
  if (status.ok())
    return llvm::Error::success();
  return llvm::createStringError(status.message());
}

llvm::Expected<std::unique_ptr<engine::CpuExecutor>> nestor::prepareCpu(func::FuncOp func,
                                                                        int numForwardResults) {
  auto fn = emitProgramFunction(func, numForwardResults);
  if (!fn)
    return fn.takeError();
  auto exec = engine::CpuExecutor::create(*fn);
  if (!exec.ok())
    return toError(exec.status());
  return std::move(*exec);
}

namespace {

std::string locationOf(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->getLoc().print(os);
  return s;
}

llvm::Error opError(Operation *op, const llvm::Twine &message) {
  return llvm::createStringError(
      (op->getName().getStringRef() + " at " + locationOf(op) + ": " + message).str());
}

/// The program dtype of an element type, or DTYPE_UNSPECIFIED.
pg::DType dtypeOf(Type e) {
  if (e.isF32())
    return pg::F32;
  if (e.isF64())
    return pg::F64;
  if (e.isInteger(1))
    return pg::I1;
  if (e.isInteger(32))
    return pg::I32;
  if (e.isInteger(64))
    return pg::I64;
  return pg::DTYPE_UNSPECIFIED;
}

llvm::Expected<pg::TensorType> tensorTypeOf(Type type, Operation *where) {
  pg::TensorType out;
  if (auto mask = dyn_cast<el::MaskType>(type)) {
    // Host-side masks are packed [m..., phi, sigma] in float64.
    out.set_dtype(pg::F64);
    out.add_shape(mask.getSize() + 2);
    return out;
  }
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return opError(where, "a value is not a statically shaped tensor");
  out.set_dtype(dtypeOf(t.getElementType()));
  if (out.dtype() == pg::DTYPE_UNSPECIFIED)
    return opError(where, "a tensor has an element type the runtime does not know");
  for (int64_t d : t.getShape())
    out.add_shape(d);
  return out;
}

/// Serialises `attrs` (ODS names; discardable `dialect.name` attributes are the compiler's
/// annotations and stay behind).
llvm::Error serializeAttributes(Operation *op, pg::Attributes &out) {
  NamedAttrList attrs(op->getAttrDictionary());
  if (auto name = op->getRegisteredInfo())
    name->populateDefaultAttrs(attrs);
  for (NamedAttribute na : attrs) {
    std::string key = na.getName().str();
    if (key == "operandSegmentSizes" || key == "resultSegmentSizes" ||
        key.find('.') != std::string::npos)
      continue;
    Attribute a = na.getValue();
    if (isa<UnitAttr>(a))
      (*out.mutable_ints())[key] = 1;
    else if (auto b = dyn_cast<BoolAttr>(a))
      (*out.mutable_ints())[key] = b.getValue() ? 1 : 0;
    else if (auto i = dyn_cast<IntegerAttr>(a))
      (*out.mutable_ints())[key] = i.getInt();
    else if (auto f = dyn_cast<FloatAttr>(a))
      (*out.mutable_floats())[key] = f.getValueAsDouble();
    else if (auto s = dyn_cast<StringAttr>(a))
      (*out.mutable_strings())[key] = s.str();
    else if (auto ia = dyn_cast<DenseI64ArrayAttr>(a)) {
      pg::IntList &list = (*out.mutable_arrays())[key];
      for (int64_t v : ia.asArrayRef())
        list.add_values(v);
    } else if (auto fa = dyn_cast<DenseF64ArrayAttr>(a)) {
      pg::FloatList &list = (*out.mutable_float_arrays())[key];
      for (double v : fa.asArrayRef())
        list.add_values(v);
    } else if (auto mode = dyn_cast<el::MaskModeAttr>(a)) {
      (*out.mutable_strings())[key] = el::stringifyMaskMode(mode.getValue()).str();
    } else if (auto ta = dyn_cast<TypeAttr>(a); ta && isa<el::MaskType>(ta.getValue())) {
      auto mask = cast<el::MaskType>(ta.getValue());
      (*out.mutable_ints())[key + "_size"] = mask.getSize();
      (*out.mutable_ints())[key + "_groups"] = mask.getGroups();
    } else {
      std::string printed;
      llvm::raw_string_ostream os(printed);
      a.print(os);
      return opError(op, "attribute '" + key + "' (" + printed +
                             ") has a kind the program format cannot hold");
    }
  }
  return llvm::Error::success();
}

/// The named operands and results of a kernel op (absent optional ones are skipped).
struct Named {
  std::vector<std::pair<const char *, Value>> operands, results;
  std::vector<Value> inputs; // variadic operands
};

/// The runtime's view of the kernel dialect: every kernel op it executes, with its operands
/// and results by their ODS names. An op missing here has no runtime kernel.
std::optional<Named> namedValues(Operation *op) {
  Named n;
  auto in = [&](const char *name, Value v) {
    if (v)
      n.operands.push_back({name, v});
  };
  auto out = [&](const char *name, Value v) {
    if (v)
      n.results.push_back({name, v});
  };
  if (auto g = dyn_cast<kn::GemmOp>(op)) {
    in("a", g.getA()), in("b", g.getB()), in("acc", g.getAcc()), in("mask", g.getMask());
    in("m_extent", g.getMExtent()), in("n_extent", g.getNExtent()), in("k_extent", g.getKExtent());
    in("n_select", g.getNSelect()), in("k_select", g.getKSelect());
    out("result", g.getResult());
  } else if (auto e = dyn_cast<kn::EmbedOp>(op)) {
    in("tokens", e.getTokens()), in("table", e.getTable()), in("mask", e.getMask());
    out("result", e.getResult());
  } else if (auto e = dyn_cast<kn::EmbedGradOp>(op)) {
    in("tokens", e.getTokens()), in("table", e.getTable()), in("result_grad", e.getResultGrad());
    in("mask", e.getMask());
    out("table_grad", e.getTableGrad()), out("mask_grad", e.getMaskGrad());
  } else if (auto r = dyn_cast<kn::RMSNormOp>(op)) {
    in("input", r.getInput()), in("weight", r.getWeight()), in("mask", r.getMask());
    out("result", r.getResult());
  } else if (auto r = dyn_cast<kn::RMSNormGradOp>(op)) {
    in("input", r.getInput()), in("weight", r.getWeight()), in("result_grad", r.getResultGrad());
    in("mask", r.getMask());
    out("input_grad", r.getInputGrad()), out("weight_grad", r.getWeightGrad());
    out("mask_grad", r.getMaskGrad());
  } else if (auto m = dyn_cast<kn::MaskOp>(op)) {
    in("input", m.getInput()), in("mask", m.getMask());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MaskGradOp>(op)) {
    in("input", m.getInput()), in("mask", m.getMask()), in("result_grad", m.getResultGrad());
    out("input_grad", m.getInputGrad()), out("mask_grad", m.getMaskGrad());
  } else if (auto r = dyn_cast<kn::Relu2Op>(op)) {
    in("input", r.getInput()), in("mask", r.getMask());
    out("result", r.getResult());
  } else if (auto r = dyn_cast<kn::Relu2GradOp>(op)) {
    in("input", r.getInput()), in("result_grad", r.getResultGrad()), in("mask", r.getMask());
    out("input_grad", r.getInputGrad()), out("mask_grad", r.getMaskGrad());
  } else if (auto g = dyn_cast<kn::DepthGateOp>(op)) {
    in("residual", g.getResidual()), in("block", g.getBlock()), in("keep", g.getKeep());
    out("result", g.getResult());
  } else if (auto g = dyn_cast<kn::DepthGateGradOp>(op)) {
    in("block", g.getBlock()), in("result_grad", g.getResultGrad()), in("keep", g.getKeep());
    out("block_grad", g.getBlockGrad()), out("keep_grad", g.getKeepGrad());
  } else if (auto c = dyn_cast<kn::CrossEntropyOp>(op)) {
    in("logits", c.getLogits()), in("targets", c.getTargets());
    out("result", c.getResult());
  } else if (auto c = dyn_cast<kn::CrossEntropyGradOp>(op)) {
    in("logits", c.getLogits()), in("targets", c.getTargets());
    in("result_grad", c.getResultGrad());
    out("logits_grad", c.getLogitsGrad());
  } else if (auto k = dyn_cast<kn::KLOp>(op)) {
    in("student", k.getStudent()), in("teacher", k.getTeacher());
    out("result", k.getResult());
  } else if (auto k = dyn_cast<kn::KLGradOp>(op)) {
    in("student", k.getStudent()), in("teacher", k.getTeacher());
    in("result_grad", k.getResultGrad());
    out("student_grad", k.getStudentGrad());
  } else if (auto a = dyn_cast<kn::AddOp>(op)) {
    n.inputs.assign(a.getInputs().begin(), a.getInputs().end());
    out("result", a.getResult());
  } else if (auto m = dyn_cast<kn::MulOp>(op)) {
    in("lhs", m.getLhs()), in("rhs", m.getRhs());
    out("result", m.getResult());
  } else if (auto s = dyn_cast<kn::SquaredNormOp>(op)) {
    n.inputs.assign(s.getInputs().begin(), s.getInputs().end());
    out("result", s.getResult());
  } else if (auto a = dyn_cast<kn::AdamWOp>(op)) {
    in("param", a.getParam()), in("grad", a.getGrad()), in("exp_avg", a.getExpAvg());
    in("exp_avg_sq", a.getExpAvgSq()), in("hyper", a.getHyper());
  } else if (auto m = dyn_cast<kn::MambaMaskOp>(op)) {
    in("heads", m.getHeads()), in("channels", m.getChannels());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaProjSelectOp>(op)) {
    in("heads", m.getHeads()), in("channels", m.getChannels());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaConvOp>(op)) {
    in("proj", m.getProj()), in("conv_weight", m.getConvWeight());
    in("conv_bias", m.getConvBias()), in("mzx", m.getMzx());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaScanOp>(op)) {
    in("proj", m.getProj()), in("xbc", m.getXbc()), in("dt_bias", m.getDtBias());
    in("a_log", m.getALog()), in("d_skip", m.getDSkip()), in("heads", m.getHeads());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaConvStepOp>(op)) {
    in("proj", m.getProj()), in("conv_weight", m.getConvWeight());
    in("conv_bias", m.getConvBias()), in("mzx", m.getMzx()), in("state", m.getState());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaScanStepOp>(op)) {
    in("proj", m.getProj()), in("xbc", m.getXbc()), in("dt_bias", m.getDtBias());
    in("a_log", m.getALog()), in("d_skip", m.getDSkip()), in("heads", m.getHeads());
    in("state", m.getState());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaGateNormOp>(op)) {
    in("y", m.getY()), in("proj", m.getProj()), in("norm_weight", m.getNormWeight());
    in("mzx", m.getMzx()), in("heads", m.getHeads()), in("channels", m.getChannels());
    out("result", m.getResult());
  } else if (auto m = dyn_cast<kn::MambaInnerGradOp>(op)) {
    in("proj", m.getProj()), in("xbc", m.getXbc()), in("y", m.getY());
    in("conv_weight", m.getConvWeight()), in("conv_bias", m.getConvBias());
    in("dt_bias", m.getDtBias()), in("a_log", m.getALog()), in("d_skip", m.getDSkip());
    in("norm_weight", m.getNormWeight()), in("result_grad", m.getResultGrad());
    in("heads", m.getHeads()), in("channels", m.getChannels());
    out("proj_grad", m.getProjGrad()), out("conv_weight_grad", m.getConvWeightGrad());
    out("conv_bias_grad", m.getConvBiasGrad()), out("dt_bias_grad", m.getDtBiasGrad());
    out("a_log_grad", m.getALogGrad()), out("d_skip_grad", m.getDSkipGrad());
    out("norm_weight_grad", m.getNormWeightGrad()), out("heads_grad", m.getHeadsGrad());
    out("channels_grad", m.getChannelsGrad());
  } else if (auto a = dyn_cast<kn::AttentionOp>(op)) {
    in("q", a.getQ()), in("k", a.getK()), in("v", a.getV()), in("heads", a.getHeads());
    out("result", a.getResult()), out("lse", a.getLse());
  } else if (auto a = dyn_cast<kn::AttentionStepOp>(op)) {
    in("q", a.getQ()), in("k", a.getK()), in("v", a.getV()), in("k_cache", a.getKCache());
    in("v_cache", a.getVCache()), in("position", a.getPosition()), in("heads", a.getHeads());
    out("result", a.getResult());
  } else if (auto a = dyn_cast<kn::AttentionGradOp>(op)) {
    in("q", a.getQ()), in("k", a.getK()), in("v", a.getV()), in("out", a.getOut());
    in("lse", a.getLse()), in("result_grad", a.getResultGrad()), in("heads", a.getHeads());
    out("q_grad", a.getQGrad()), out("k_grad", a.getKGrad()), out("v_grad", a.getVGrad());
  } else {
    return std::nullopt;
  }
  return n;
}

/// The element type an op computes in: its first floating-point tensor operand's (the
/// optimizer's hyper-parameters and the squared norm's result are float64 whatever the model).
pg::DType computeOf(Operation *op) {
  for (Value v : op->getOperands())
    if (auto t = dyn_cast<RankedTensorType>(v.getType()); t && isa<FloatType>(t.getElementType()))
      return dtypeOf(t.getElementType());
  for (Type t : op->getResultTypes())
    if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType()))
      return dtypeOf(rt.getElementType());
  return pg::F32;
}

/// The elastic ops a host step may hold (runtime/reference/HostOps.h implements each).
bool isHostElasticOp(Operation *op) {
  return isa<el::OneHotOp, el::RouterOp, el::GumbelNoiseOp, el::GumbelSoftmaxOp, el::PrefixMaskOp,
             el::LayerKeepOp, el::ExpectedSizeOp, el::ParamCountOp, el::ResourceLossOp,
             el::RouterGradOp, el::GumbelSoftmaxGradOp, el::PrefixMaskGradOp, el::LayerKeepGradOp,
             el::ExpectedSizeGradOp, el::ParamCountGradOp, el::ResourceLossGradOp>(op);
}

llvm::Error emitHostBlock(kn::HostOp host, pg::HostBlock &out) {
  llvm::DenseMap<Value, int32_t> local;
  auto define = [&](Value v) -> llvm::Error {
    auto type = tensorTypeOf(v.getType(), host);
    if (!type)
      return type.takeError();
    local[v] = out.local_types_size();
    *out.add_local_types() = *type;
    return llvm::Error::success();
  };
  Block &body = host.getBody().front();
  for (BlockArgument arg : body.getArguments())
    if (llvm::Error e = define(arg))
      return e;
  for (Operation &op : body) {
    if (auto yield = dyn_cast<kn::YieldOp>(op)) {
      for (Value v : yield.getValues())
        out.add_yields(local.lookup(v));
      continue;
    }
    if (!isHostElasticOp(&op))
      return opError(&op, "cannot run in a host step (no host semantics)");
    pg::HostOp &h = *out.add_ops();
    h.set_kind(op.getName().getStringRef().str());
    for (Value v : op.getOperands()) {
      auto it = local.find(v);
      if (it == local.end())
        return opError(&op, "reads a value from outside its host step");
      h.add_operands(it->second);
    }
    if (llvm::Error e = serializeAttributes(&op, *h.mutable_attributes()))
      return e;
    for (Value r : op.getResults()) {
      if (auto mask = dyn_cast<el::MaskType>(r.getType())) {
        (*h.mutable_attributes()->mutable_ints())["result_size"] = mask.getSize();
        (*h.mutable_attributes()->mutable_ints())["result_groups"] = mask.getGroups();
      }
      h.add_results(out.local_types_size());
      if (llvm::Error e = define(r))
        return e;
      *h.add_result_types() = out.local_types(h.results(h.results_size() - 1));
    }
  }
  return llvm::Error::success();
}

/// Little-endian bytes of a dense constant in its element type.
llvm::Expected<std::string> constantBytes(arith::ConstantOp cst, pg::DType dtype) {
  auto dense = dyn_cast<DenseElementsAttr>(cst.getValue());
  if (!dense)
    return opError(cst, "only dense tensor constants are supported");
  std::string bytes;
  auto put = [&](const void *p, size_t n) { bytes.append(static_cast<const char *>(p), n); };
  if (dtype == pg::F32 || dtype == pg::F64) {
    for (APFloat v : dense.getValues<APFloat>()) {
      double d = v.convertToDouble();
      if (dtype == pg::F64) {
        put(&d, 8);
      } else {
        float f = static_cast<float>(d);
        put(&f, 4);
      }
    }
  } else {
    for (APInt v : dense.getValues<APInt>()) {
      int64_t i = dtype == pg::I1 ? static_cast<int64_t>(v.getZExtValue()) : v.getSExtValue();
      if (dtype == pg::I64) {
        put(&i, 8);
      } else if (dtype == pg::I32) {
        int32_t j = static_cast<int32_t>(i);
        put(&j, 4);
      } else {
        uint8_t b = i != 0;
        put(&b, 1);
      }
    }
  }
  return bytes;
}

} // namespace

llvm::Expected<pg::Function> nestor::emitProgramFunction(func::FuncOp func, int numForwardResults) {
  pg::Function out;
  out.set_name(func.getSymName().str());
  auto arena = func->getAttrOfType<IntegerAttr>("kernel.arena_bytes");
  if (!arena)
    return llvm::createStringError("@%s has no memory plan (run kernel-plan-memory first)",
                                   func.getSymName().str().c_str());
  out.set_arena_bytes(arena.getInt());
  out.set_keep_value(-1);

  llvm::DenseMap<Value, int32_t> ids;
  auto addValue = [&](Value v, Operation *where) -> llvm::Expected<pg::Value *> {
    auto type = tensorTypeOf(v.getType(), where);
    if (!type)
      return type.takeError();
    ids[v] = out.values_size();
    pg::Value *pv = out.add_values();
    *pv->mutable_type() = *type;
    return pv;
  };

  for (BlockArgument arg : func.getArguments()) {
    auto v = addValue(arg, func);
    if (!v)
      return v.takeError();
    unsigned i = arg.getArgNumber();
    (*v)->set_argument(static_cast<int32_t>(i));
    pg::Argument &a = *out.add_arguments();
    a.set_value(ids[arg]);
    if (auto p = func.getArgAttrOfType<StringAttr>(i, "elastic.param")) {
      a.set_name(p.str());
      a.set_role(pg::PARAM);
    } else if (auto in = func.getArgAttrOfType<StringAttr>(i, "elastic.input")) {
      a.set_name(in.str());
      a.set_role(pg::INPUT);
    } else if (auto st = func.getArgAttrOfType<StringAttr>(i, "elastic.state")) {
      a.set_name(st.str());
      a.set_role(pg::STATE);
    } else {
      a.set_name("arg" + std::to_string(i));
      a.set_role(pg::INPUT);
    }
  }

  auto idOf = [&](Value v, Operation *user) -> llvm::Expected<int32_t> {
    auto it = ids.find(v);
    if (it == ids.end())
      return opError(user, "uses a value the program does not define");
    return it->second;
  };

  for (Operation &op : func.front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      int forward = 0;
      for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
        auto id = idOf(v, &op);
        if (!id)
          return id.takeError();
        pg::Result &r = *out.add_results();
        r.set_value(*id);
        if (auto g = func.getResultAttrOfType<StringAttr>(i, "elastic.grad_of"))
          r.set_grad_of(g.str());
        else
          ++forward;
      }
      out.set_num_forward_results(numForwardResults >= 0 ? numForwardResults : forward);
      continue;
    }
    if (auto cst = dyn_cast<arith::ConstantOp>(op)) {
      auto v = addValue(cst, &op);
      if (!v)
        return v.takeError();
      auto bytes = constantBytes(cst, (*v)->type().dtype());
      if (!bytes)
        return bytes.takeError();
      (*v)->set_constant(std::move(*bytes));
      continue;
    }
    // Results live where the memory plan put them.
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("kernel.offsets");
    if (op.getNumResults() > 0 &&
        (!offsets || offsets.size() != static_cast<int64_t>(op.getNumResults())))
      return opError(&op, "has no memory plan offsets");
    for (auto [i, r] : llvm::enumerate(op.getResults())) {
      auto v = addValue(r, &op);
      if (!v)
        return v.takeError();
      (*v)->set_arena_offset(offsets[i]);
    }

    pg::Step &step = *out.add_steps();
    step.set_kind(op.getName().getStringRef().str());
    step.set_location(locationOf(&op));
    step.set_compute(computeOf(&op));
    if (auto host = dyn_cast<kn::HostOp>(op)) {
      for (Value v : host.getInputs()) {
        auto id = idOf(v, &op);
        if (!id)
          return id.takeError();
        step.add_inputs(*id);
      }
      for (Value v : host.getResults())
        step.add_outputs(ids[v]);
      if (llvm::Error e = emitHostBlock(host, *step.mutable_host()))
        return e;
    } else {
      std::optional<Named> named = namedValues(&op);
      if (!named)
        return opError(&op, "has no runtime kernel");
      for (auto &[name, v] : named->operands) {
        auto id = idOf(v, &op);
        if (!id)
          return id.takeError();
        (*step.mutable_operands())[name] = *id;
      }
      for (Value v : named->inputs) {
        auto id = idOf(v, &op);
        if (!id)
          return id.takeError();
        step.add_inputs(*id);
      }
      for (auto &[name, v] : named->results)
        (*step.mutable_results())[name] = ids[v];
      if (llvm::Error e = serializeAttributes(&op, *step.mutable_attributes()))
        return e;
      // The depth gates' keep vector, which gated steps read.
      if (auto gate = dyn_cast<kn::DepthGateOp>(op); gate && gate.getKeep() && out.keep_value() < 0)
        out.set_keep_value(ids[gate.getKeep()]);
    }
    if (auto layer = op.getAttrOfType<IntegerAttr>("kernel.layer")) {
      step.set_gated(true);
      step.set_layer(layer.getInt());
    }
  }
  // A gated step before the first depth gate still needs the keep vector: look it up anywhere.
  if (out.keep_value() < 0)
    func.walk([&](kn::DepthGateGradOp g) {
      if (g.getKeep() && out.keep_value() < 0)
        out.set_keep_value(ids[g.getKeep()]);
    });
  return out;
}

llvm::Expected<pg::Program> nestor::emitProgram(ModuleOp module, const std::string &target) {
  pg::Program out;
  out.set_generator(programGenerator());
  out.set_target(target);
  for (auto func : module.getOps<func::FuncOp>()) {
    if (!func->hasAttr("kernel.arena_bytes"))
      continue;
    auto f = emitProgramFunction(func);
    if (!f)
      return f.takeError();
    *out.add_functions() = std::move(*f);
  }
  if (out.functions_size() == 0)
    return llvm::createStringError("the module has no planned kernel function to emit");
  return out;
}
