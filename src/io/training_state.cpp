// Optimizer and schedule states in safetensors files (docs/optim.md §7), and
// training checkpoints (docs/reliability.md).
#include "io/training_state.h"

#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "io/model_file.h"
#include "nn/sgd.h"
#include "quant/layer.h"
#include "quant/observer.h"

namespace tq::io {

void put_state(SafetensorsFile& file, const std::string& prefix, const nn::StateDict& state) {
  if (prefix.empty()) throw std::invalid_argument("put_state: empty prefix");
  if (file.metadata.count(prefix))
    throw std::invalid_argument(fmt::format("put_state: the file already has a state '{}'", prefix));
  nlohmann::json scalars = nlohmann::json::object();
  for (const auto& [key, value] : state.scalars) {
    if (!std::isfinite(value))
      throw std::invalid_argument(fmt::format("put_state: {} value '{}' is {}, which a file cannot hold exactly",
                                              state.kind, key, value));
    scalars[key] = value;
  }
  nlohmann::json tensor_names = nlohmann::json::array();
  for (const auto& [key, t] : state.tensors) {
    const std::string name = prefix + "." + key;
    if (file.tensors.count(name)) throw std::invalid_argument(fmt::format("put_state: tensor '{}' exists already", name));
    file.tensors[name] = t;
    tensor_names.push_back(key);
  }
  file.metadata[prefix] = nlohmann::json{{"kind", state.kind}, {"scalars", scalars}, {"tensors", tensor_names}}.dump();
}

bool has_state(const SafetensorsFile& file, const std::string& prefix) { return file.metadata.count(prefix) != 0; }

nn::StateDict get_state(const SafetensorsFile& file, const std::string& prefix, const std::string& name) {
  auto it = file.metadata.find(prefix);
  if (it == file.metadata.end()) throw FormatError(fmt::format("{}: no '{}' state in the file", name, prefix));
  nn::StateDict s;
  try {
    const auto j = nlohmann::json::parse(it->second);
    s.kind = j.at("kind").get<std::string>();
    for (const auto& [key, value] : j.at("scalars").items()) {
      if (!value.is_number())
        throw FormatError(fmt::format("{}: '{}' value '{}' is not a number", name, prefix, key));
      s.scalars[key] = value.get<double>();
    }
    for (const auto& key_json : j.at("tensors")) {
      const std::string key = key_json.get<std::string>();
      auto t = file.tensors.find(prefix + "." + key);
      if (t == file.tensors.end())
        throw FormatError(fmt::format("{}: the '{}' state names tensor '{}', which the file lacks", name, prefix, key));
      s.tensors[key] = t->second;
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: bad '{}' state ({})", name, prefix, e.what()));
  }
  return s;
}

// ---- Checkpoints ----

namespace {

using json = nlohmann::json;

constexpr const char* kCheckpointKey = "tinyqat_checkpoint";

json rng_json(const Generator::State& r) {
  return json{{"s", {r.s[0], r.s[1], r.s[2], r.s[3]}}, {"has_spare", r.has_spare}, {"spare", r.spare}};
}

// Reads the checkpoint description with every value checked by type and
// range before it is converted (a JSON float cast to an integer out of range
// is undefined behaviour), so an error names the field, never the JSON
// library's own words.
class Reader {
 public:
  explicit Reader(const std::string& name) : name_(name) {}

  FormatError bad(const std::string& field, const std::string& what) const {
    return FormatError(fmt::format("{}: checkpoint field '{}' {}", name_, field, what));
  }
  const json& at(const json& j, const char* key, const std::string& field) const {
    if (!j.is_object() || !j.contains(key)) throw bad(field, "is missing");
    return j.at(key);
  }
  int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo)
      return static_cast<int64_t>(v.get<uint64_t>());
    if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi)
      return v.get<int64_t>();
    throw bad(field, fmt::format("is {}, not an integer in {}..{}", v.dump().substr(0, 40), lo, hi));
  }
  uint64_t unsigned_integer(const json& v, const std::string& field) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    throw bad(field, fmt::format("is {}, not an unsigned integer", v.dump().substr(0, 40)));
  }
  double number(const json& v, const std::string& field) const {
    if (!v.is_number()) throw bad(field, fmt::format("is {}, not a number", v.dump().substr(0, 40)));
    const double x = v.get<double>();
    if (!std::isfinite(x)) throw bad(field, "is not finite");
    return x;
  }
  bool boolean(const json& v, const std::string& field) const {
    if (!v.is_boolean()) throw bad(field, fmt::format("is {}, not true or false", v.dump().substr(0, 40)));
    return v.get<bool>();
  }
  std::string string(const json& v, const std::string& field) const {
    if (!v.is_string()) throw bad(field, fmt::format("is {}, not a string", v.dump().substr(0, 40)));
    return v.get<std::string>();
  }
  // A generator state that the generator can leave (not all zero) with a finite spare deviate.
  Generator::State rng(const json& r, const std::string& field) const {
    Generator::State s{};
    const json& words = at(r, "s", field + ".s");
    if (!words.is_array() || words.size() != 4) throw bad(field + ".s", "is not an array of 4 unsigned integers");
    for (size_t i = 0; i < 4; ++i) s.s[i] = unsigned_integer(words[i], field + ".s");
    s.has_spare = boolean(at(r, "has_spare", field + ".has_spare"), field + ".has_spare");
    s.spare = number(at(r, "spare", field + ".spare"), field + ".spare");
    if ((s.s[0] | s.s[1] | s.s[2] | s.s[3]) == 0)
      throw bad(field, "is the all-zero generator state, which the generator never leaves");
    return s;
  }

 private:
  const std::string& name_;
};

// Every f32 value of the state's tensors finite (a NaN momentum buffer would
// reach the weights at the first step).
void check_state_tensors(const nn::StateDict& s, const std::string& prefix, const Reader& r) {
  for (const auto& [key, t] : s.tensors) {
    if (t.dtype() != DType::f32) continue;  // load_state_dict names a wrong dtype
    const Tensor v = kernels::contiguous(t);
    const float* p = v.data<float>();
    for (int64_t i = 0, i_end = v.numel(); i < i_end; ++i)
      if (!std::isfinite(p[i]))
        throw r.bad(prefix + "." + key, fmt::format("holds {} at element {}; optimizer state must be finite", p[i], i));
  }
}

// What kind of model the run trains: a float model ("train") has no
// quantizer at all; a QAT model ("qat") has prepared layers whose
// quantizers are fake quants (not a calibration model's observers) and no
// int8 layer.
void check_kind(nn::Module& model, const std::string& kind, const Reader& r) {
  int prepared = 0;
  for (auto& [path, m] : model.named_modules()) {
    const bool quantizer = dynamic_cast<quant::QParamsSource*>(m) != nullptr;
    if (kind == "train" && (quant::as_quant_layer(m) || quantizer))
      throw r.bad("command.command", fmt::format("is \"train\", but the model holds '{}' ({}), which a float model does "
                                                 "not have",
                                                 path, m->type_name()));
    if (kind != "qat") continue;
    if (quant::as_quantized_layer(m))
      throw r.bad("command.command", fmt::format("is \"qat\", but '{}' is an int8 layer ({}); a QAT run trains a model "
                                                 "prepared for QAT",
                                                 path, m->type_name()));
    if (auto* p = quant::as_prepared_layer(m)) {
      ++prepared;
      for (quant::QuantRole role : {quant::QuantRole::input, quant::QuantRole::weight, quant::QuantRole::output})
        if (dynamic_cast<quant::ObserverBase*>(p->quantizer(role)))
          throw r.bad("command.command", fmt::format("is \"qat\", but '{}' ({}) is calibrated by observers, not "
                                                     "prepared for QAT",
                                                     path, m->type_name()));
    }
  }
  if (kind == "qat" && prepared == 0)
    throw r.bad("command.command", "is \"qat\", but the model has no layer prepared for QAT (a float model?)");
}

}  // namespace

SafetensorsFile checkpoint_to_safetensors(const nn::Module& model, const nn::Optimizer& optimizer,
                                          const nn::LRScheduler* schedule, const Augmenter* augment,
                                          const LoaderState& ls, const TrainState& st, const std::string& command_json) {
  SafetensorsFile file = model_to_safetensors(model);
  put_state(file, "__optimizer__", optimizer.state_dict());
  if (schedule) put_state(file, "__lr_scheduler__", schedule->state_dict());
  for (const auto& [name, t] : st.best.parameters()) file.tensors["__best__." + name] = t;
  for (const auto& [name, t] : st.best.buffers()) file.tensors["__best__." + name] = t;
  json history = json::array();
  for (auto& e : st.history)
    history.push_back({{"loss", e.loss}, {"accuracy", e.test_accuracy}, {"seconds", e.seconds}, {"val_accuracy", e.val_accuracy}});
  json ck = {
      {"epoch", st.epoch}, {"step_in_epoch", st.step_in_epoch}, {"global_step", st.global_step}, {"loss_sum", st.loss_sum},
      {"history", history}, {"parameters", optimizer.params().size()},
      {"loader", {{"epoch", ls.epoch}, {"next_batch", ls.next_batch}, {"rng", rng_json(ls.rng)}, {"num_samples", ls.num_samples},
                  {"batch_size", ls.batch_size}, {"shuffle", ls.shuffle}, {"drop_last", ls.drop_last},
                  {"world_size", ls.world_size}}},
      {"global_rng", rng_json(default_generator().state())}, {"command", json::parse(command_json)}};
  if (!st.best.empty()) {
    ck["best"] = {{"epoch", st.best_epoch}, {"val_accuracy", st.best_val_accuracy}};
    json names = json::array(), buffers = json::array();
    for (const auto& [name, t] : st.best.parameters()) names.push_back(name);
    for (const auto& [name, t] : st.best.buffers()) buffers.push_back(name);
    ck["best"]["parameters"] = names;
    ck["best"]["buffers"] = buffers;
  }
  if (augment) ck["augment_rng"] = rng_json(augment->state());
  file.metadata[kCheckpointKey] = ck.dump();
  return file;
}

void save_checkpoint(const std::string& path, const nn::Module& model, const nn::Optimizer& optimizer,
                     const nn::LRScheduler* schedule, const Augmenter* augment, const LoaderState& loader,
                     const TrainState& state, const std::string& command_json) {
  save_safetensors(path, checkpoint_to_safetensors(model, optimizer, schedule, augment, loader, state, command_json));
}

Checkpoint parse_checkpoint(const SafetensorsFile& file, const std::string& name) {
  auto it = file.metadata.find(kCheckpointKey);
  if (it == file.metadata.end()) throw FormatError(fmt::format("{}: not a checkpoint (no '{}' metadata)", name, kCheckpointKey));
  const Reader r(name);
  // Depth and size first: nothing recursive may meet a hostile nesting.
  check_json_limits(it->second, name, "the checkpoint description", 32);
  json j;
  try {
    j = json::parse(it->second);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: the checkpoint description is not valid JSON ({})", name, e.what()));
  }
  if (!j.is_object()) throw FormatError(fmt::format("{}: the checkpoint description is not a JSON object", name));
  Checkpoint c;

  // The run's settings: what kind of run, and how many epochs it has.
  const json& command = r.at(j, "command", "command");
  if (!command.is_object()) throw r.bad("command", "is not a JSON object");
  c.command_json = command.dump();
  c.kind = r.string(r.at(command, "command", "command.command"), "command.command");
  if (c.kind != "train" && c.kind != "qat")
    throw r.bad("command.command", fmt::format("is \"{}\"; a checkpoint is of a \"train\" or a \"qat\" run", c.kind.substr(0, 40)));
  if (!command.contains("epochs") || !command.at("epochs").is_number_integer())
    throw r.bad("command.epochs", "is missing or not an integer");
  c.epochs = static_cast<int>(r.integer(command.at("epochs"), "command.epochs", 1, 1'000'000));

  // The counters, each in range, and all of them consistent.
  TrainState& st = c.state;
  const json& epoch = r.at(j, "epoch", "epoch");
  if (!epoch.is_number_integer()) throw r.bad("epoch", fmt::format("is {}, not an integer", epoch.dump().substr(0, 40)));
  // Checkpoints are written inside an epoch, so one that completed every
  // epoch of its run cannot exist (resuming it ran no epoch, and read the
  // last entry of an empty history).
  const bool in_range = epoch.is_number_unsigned() ? epoch.get<uint64_t>() < static_cast<uint64_t>(c.epochs)
                                                   : epoch.get<int64_t>() >= 0 && epoch.get<int64_t>() < c.epochs;
  if (!in_range)
    throw r.bad("epoch", fmt::format("is {}, outside 0..{} (the run has {} epochs)", epoch.dump(), c.epochs - 1, c.epochs));
  const int64_t e = epoch.get<int64_t>();
  st.epoch = static_cast<int>(e);
  const json& history = r.at(j, "history", "history");
  if (!history.is_array()) throw r.bad("history", "is not an array");
  if (history.size() != static_cast<size_t>(st.epoch))
    throw r.bad("history", fmt::format("has {} entries for {} completed epochs", history.size(), st.epoch));
  // An accuracy is a percentage, or -1: not measured (the test set with a
  // validation set; the validation set without).
  auto percent = [](double a) { return a == -1 || (a >= 0 && a <= 100); };
  for (const json& h : history) {
    EpochStats s;
    if (!h.is_object() || !h.contains("loss") || !h.contains("accuracy") || !h.contains("seconds") ||
        !h.at("loss").is_number() || !h.at("accuracy").is_number() || !h.at("seconds").is_number() ||
        (h.contains("val_accuracy") && !h.at("val_accuracy").is_number()))
      throw r.bad("history", "holds an entry that is not {loss, accuracy, seconds, val_accuracy} numbers");
    s.loss = h.at("loss").get<double>();
    s.test_accuracy = h.at("accuracy").get<double>();
    s.seconds = h.at("seconds").get<double>();
    s.val_accuracy = h.value("val_accuracy", -1.0);
    if (!std::isfinite(s.loss) || !std::isfinite(s.seconds) || !percent(s.test_accuracy) || !percent(s.val_accuracy) ||
        s.seconds < 0)
      throw r.bad("history", "holds a loss, accuracy or time that is not finite or out of range");
    st.history.push_back(s);
  }
  constexpr int64_t kMaxSteps = int64_t{1} << 62;
  st.step_in_epoch = r.integer(r.at(j, "step_in_epoch", "step_in_epoch"), "step_in_epoch", std::numeric_limits<int64_t>::min(), kMaxSteps);
  if (st.step_in_epoch < 0) throw r.bad("step_in_epoch", fmt::format("is negative ({})", st.step_in_epoch));
  st.global_step = r.integer(r.at(j, "global_step", "global_step"), "global_step", std::numeric_limits<int64_t>::min(), kMaxSteps);
  if (st.global_step < st.step_in_epoch)
    throw r.bad("global_step", fmt::format("is {}, less than step_in_epoch {}", st.global_step, st.step_in_epoch));
  st.loss_sum = r.number(r.at(j, "loss_sum", "loss_sum"), "loss_sum");
  if (st.loss_sum < 0) throw r.bad("loss_sum", fmt::format("is {}; a sum of losses is finite and not negative", st.loss_sum));

  // The loader: its position agrees with the counters.
  const json& l = r.at(j, "loader", "loader");
  c.loader.num_samples = r.integer(r.at(l, "num_samples", "loader.num_samples"), "loader.num_samples",
                                   std::numeric_limits<int64_t>::min(), int64_t{1} << 40);
  c.loader.batch_size = r.integer(r.at(l, "batch_size", "loader.batch_size"), "loader.batch_size",
                                  std::numeric_limits<int64_t>::min(), int64_t{1} << 40);
  if (c.loader.num_samples < 1 || c.loader.batch_size < 1)
    throw r.bad("loader", fmt::format("has num_samples {} and batch_size {}; both must be positive", c.loader.num_samples,
                                      c.loader.batch_size));
  c.loader.shuffle = r.boolean(r.at(l, "shuffle", "loader.shuffle"), "loader.shuffle");
  c.loader.drop_last = r.boolean(r.at(l, "drop_last", "loader.drop_last"), "loader.drop_last");
  // Data parallel: the ranks of the run that wrote it (absent before data
  // parallelism: one process). A resume needs as many.
  c.loader.world_size = l.contains("world_size")
                            ? static_cast<int>(r.integer(l.at("world_size"), "loader.world_size", 1, 1'000'000))
                            : 1;
  // Global batches per epoch, counted as DataLoader::num_batches counts them.
  const int64_t global = c.loader.batch_size * c.loader.world_size, rest = c.loader.num_samples % global;
  const int64_t batches = c.loader.num_samples / global +
                          (c.loader.drop_last || rest == 0 || rest < c.loader.world_size ? 0 : 1);
  if (batches < 1)
    throw r.bad("loader", fmt::format("has {} samples in batches of {} with drop_last: no batch", c.loader.num_samples,
                                      c.loader.batch_size));
  c.loader.next_batch = r.integer(r.at(l, "next_batch", "loader.next_batch"), "loader.next_batch",
                                  std::numeric_limits<int64_t>::min(), kMaxSteps);
  if (c.loader.next_batch != st.step_in_epoch)
    throw r.bad("loader.next_batch", fmt::format("is {}, but step_in_epoch is {}", c.loader.next_batch, st.step_in_epoch));
  if (st.step_in_epoch > batches)
    throw r.bad("step_in_epoch", fmt::format("is {}, beyond the {} batches of an epoch", st.step_in_epoch, batches));
  c.loader.epoch = r.unsigned_integer(r.at(l, "epoch", "loader.epoch"), "loader.epoch");
  if (c.loader.epoch != static_cast<uint64_t>(st.epoch))
    throw r.bad("loader.epoch", fmt::format("is {}, but epoch is {}", c.loader.epoch, st.epoch));
  // Every epoch has the same number of steps (at most 1e6 epochs of 2^40 steps: no overflow).
  if (st.global_step != st.epoch * batches + st.step_in_epoch)
    throw r.bad("global_step", fmt::format("is {}, but {} epochs of {} steps and {} steps more make {}", st.global_step,
                                           st.epoch, batches, st.step_in_epoch, st.epoch * batches + st.step_in_epoch));
  c.loader.rng = r.rng(r.at(l, "rng", "loader.rng"), "loader.rng");
  c.global_rng = r.rng(r.at(j, "global_rng", "global_rng"), "global_rng");
  if (j.contains("augment_rng")) c.augment_rng = r.rng(j.at("augment_rng"), "augment_rng");

  // The model: the file without the optimizer's, schedule's and best epoch's tensors.
  SafetensorsFile model_part;
  model_part.metadata = file.metadata;
  for (const auto& [tensor_name, t] : file.tensors)
    if (tensor_name.rfind("__optimizer__.", 0) != 0 && tensor_name.rfind("__lr_scheduler__.", 0) != 0 &&
        tensor_name.rfind("__best__.", 0) != 0)
      model_part.tensors.emplace(tensor_name, t);
  c.model = build_model(model_part, name);
  check_kind(*c.model, c.kind, r);

  // The optimizer's state, over exactly the model's parameters.
  const size_t params = c.model->parameters().size();
  const int64_t n = r.integer(r.at(j, "parameters", "parameters"), "parameters", 0, 1'000'000);
  if (static_cast<size_t>(n) != params)
    throw r.bad("parameters", fmt::format("is {}, but the model has {} parameters", n, params));
  if (has_state(file, "__optimizer__")) {
    c.optimizer = get_state(file, "__optimizer__", name);
    check_state_tensors(*c.optimizer, "__optimizer__", r);
    if (has_state(file, "__lr_scheduler__")) {
      c.schedule = get_state(file, "__lr_scheduler__", name);
      check_state_tensors(*c.schedule, "__lr_scheduler__", r);
    }
  } else {  // written before optimizers had a state of their own: SGD's momentum buffers
    c.momentum.resize(params);
    for (size_t i = 0; i < params; ++i)
      if (auto t = file.tensors.find(fmt::format("__optimizer__.momentum.{}", i)); t != file.tensors.end()) c.momentum[i] = t->second;
  }

  // The best epoch (with a validation set): its weights are those of the
  // same model, with values a model file of it may hold. They are checked
  // by building that model file, so every check of the model reader applies.
  if (j.contains("best")) {
    const json& b = j.at("best");
    st.best_epoch = static_cast<int>(r.integer(r.at(b, "epoch", "best.epoch"), "best.epoch", 0, 1'000'000));
    st.best_val_accuracy = r.number(r.at(b, "val_accuracy", "best.val_accuracy"), "best.val_accuracy");
    if (st.best_epoch < 1 || st.best_epoch > st.epoch || !percent(st.best_val_accuracy))
      throw r.bad("best", fmt::format("names epoch {} (accuracy {}) of {} completed", st.best_epoch, st.best_val_accuracy,
                                      st.epoch));
    std::vector<std::pair<std::string, Tensor>> best_params, best_buffers;
    SafetensorsFile best_file = model_part;
    std::set<std::string> seen;
    auto take = [&](const json& names, const char* field, std::vector<std::pair<std::string, Tensor>>& out) {
      if (!names.is_array()) throw r.bad(field, "is not an array of names");
      for (const json& name_json : names) {
        const std::string key = r.string(name_json, field);
        auto t = file.tensors.find("__best__." + key);
        if (t == file.tensors.end())
          throw r.bad("best", fmt::format("names '{}', which the file lacks", key.substr(0, 200)));
        if (!best_file.tensors.count(key) || !seen.insert(key).second)
          throw r.bad(field, fmt::format("names '{}', which is not one of the model's tensors (or is named twice)", key.substr(0, 200)));
        best_file.tensors[key] = t->second;
        out.emplace_back(key, t->second);
      }
    };
    take(r.at(b, "parameters", "best.parameters"), "best.parameters", best_params);
    take(r.at(b, "buffers", "best.buffers"), "best.buffers", best_buffers);
    const auto model_params = c.model->named_parameters();
    const auto model_buffers = c.model->named_buffers();
    if (best_params.size() != model_params.size() || best_buffers.size() != model_buffers.size())
      throw r.bad("best", fmt::format("holds {} parameters and {} buffers; the model has {} and {}", best_params.size(),
                                      best_buffers.size(), model_params.size(), model_buffers.size()));
    for (size_t i = 0; i < model_params.size(); ++i)
      if (best_params[i].first != model_params[i].first)
        throw r.bad("best.parameters", fmt::format("names '{}' where the model has '{}'", best_params[i].first.substr(0, 200),
                                                   model_params[i].first));
    for (size_t i = 0; i < model_buffers.size(); ++i)
      if (best_buffers[i].first != model_buffers[i].first || best_buffers[i].second.dtype() != model_buffers[i].second.dtype() ||
          !(best_buffers[i].second.shape() == model_buffers[i].second.shape()))
        throw r.bad("best.buffers", fmt::format("'{}' is {} {} where the model's '{}' is {} {}", best_buffers[i].first.substr(0, 200),
                                                dtype_name(best_buffers[i].second.dtype()), best_buffers[i].second.shape().str(),
                                                model_buffers[i].first, dtype_name(model_buffers[i].second.dtype()),
                                                model_buffers[i].second.shape().str()));
    try {
      build_model(best_file, name + " (the best epoch's weights)");
    } catch (const FormatError& e) {
      throw r.bad("best", fmt::format("holds weights the model cannot take: {}", e.what()));
    }
    st.best = nn::ModelSnapshot::from(std::move(best_params), std::move(best_buffers));
  }
  return c;
}

Checkpoint load_checkpoint(const std::string& path) { return parse_checkpoint(load_safetensors(path), path); }

void restore_checkpoint(const Checkpoint& c, nn::Optimizer& optimizer, nn::LRScheduler* schedule, Augmenter* augment,
                        DataLoader* loader, const std::string& name) {
  try {
    if (schedule && !c.schedule) throw std::invalid_argument("holds no learning-rate schedule, and the run has one");
    if (augment && !c.augment_rng) throw std::invalid_argument("holds no augmentation state, and the run augments");
    if (loader) loader->set_state(c.loader);
    if (c.optimizer) {
      optimizer.load_state_dict(*c.optimizer);
    } else if (auto* sgd = dynamic_cast<nn::SGD*>(&optimizer)) {
      sgd->set_momentum_buffers(c.momentum);  // checks the count, each shape and that every value is finite
    } else {
      throw std::invalid_argument(fmt::format("holds SGD momentum only, and the run uses {}", optimizer.type_name()));
    }
    if (schedule) schedule->load_state_dict(*c.schedule);
    if (augment) augment->set_state(*c.augment_rng);
  } catch (const std::invalid_argument& e) {
    throw FormatError(fmt::format("{}: checkpoint: {}", name, e.what()));
  }
}

}  // namespace tq::io
