// tinyqat qat: fine-tune a float model with fake quantization, convert it to
// int8 and save it (docs/cli.md "qat"): quant::quantize_qat around the
// training loop of common.h, with checkpoints and --resume.
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "quant/evaluate.h"
#include "quant/passes.h"
#include "quant/recipe.h"
#include "tensor/communicator.h"
#include "tensor/random.h"

namespace tq::cli {

int run_qat(int argc, char** argv) {
  cxxopts::Options o("tinyqat qat", "Fine-tune a float model with fake quantization, convert it to int8 and save it.");
  o.add_options()("from", "float model file", cxxopts::value<std::string>())("epochs", "epochs", cxxopts::value<int>()->default_value("1"))(
      "qconfig", "x86 | fbgemm | qnnpack", cxxopts::value<std::string>()->default_value("x86"))(
      "lr", "learning rate", cxxopts::value<double>()->default_value("0.01"))("seed", "shuffling seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "no-fuse", "keep Linear and ReLU, Conv2d, BatchNorm2d and ReLU apart (by default they are fused)")(
      "arch", "check that --from holds this architecture: mlp, cnn or mobilenet_v2", cxxopts::value<std::string>())(
      "learnable-scale", "LSQ: learn the quantizers' scales (and activation zero points) with the weights")(
      "out", "int8 model file to write", cxxopts::value<std::string>());
  add_limits(o);
  add_common(o);
  add_bits(o);
  add_recipe(o);
  add_qat_schedule(o);
  add_checkpointing(o);
  auto r = parse(o, argc, argv);
  if (r.count("arch")) check_arch_name(r["arch"].as<std::string>());
  apply_threads(r);
  const std::string out = require(r, "out");
  check_output_path(out);
  json cmd = {{"command", "qat"}, {"epochs", r["epochs"].as<int>()}, {"qconfig", r["qconfig"].as<std::string>()},
              {"batch_size", r["batch-size"].as<int64_t>()}, {"lr", r["lr"].as<double>()},
              {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}, {"fuse", !r.count("no-fuse")},
              {"learnable_scale", r.count("learnable-scale") > 0}};
  limits_to_command(r, cmd, false);
  recipe_to_command(r, cmd);
  const Bits bits = parse_bits(r, r["qconfig"].as<std::string>());
  cmd["weight_bits"] = bits.weight;
  cmd["activation_bits"] = bits.activation;
  cmd["layer_bits"] = bits.layers;  // kept in checkpoints: --resume compares it
  read_qat_schedule(r, cmd);
  const std::optional<Checkpoint> ck = resume_checkpoint(r, "qat", cmd);
  if (cmd["epochs"].get<int>() < 1) throw UsageError("--epochs must be at least 1");
  const bool lsq = cmd.value("learnable_scale", false);
  auto make_qconfig = [lsq](int w, int a) {
    return lsq ? quant::make_lsq_qat_qconfig(w, a) : quant::make_qat_qconfig(w, a);
  };
  // The preset itself unless bit widths or LSQ were asked for.
  auto qconfig = (bits.given || lsq) ? make_qconfig(bits.weight, bits.activation)
                                     : quant::get_default_qat_qconfig(cmd["qconfig"].get<std::string>());
  FashionMnist data = load_data(r);
  apply_limits(cmd, data);
  check_batch_fits(cmd, data.train.size());

  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<nn::Module> model;
  if (ck) {
    model = ck->model;  // already prepared for QAT, with its observers' state
    memory_grows_with(fmt::format("--batch-size {} (of the run in --resume {})", cmd["batch_size"].get<int64_t>(),
                                  r["resume"].as<std::string>()));
    default_generator().set_state(ck->global_rng);
  } else {
    model = load_float(require(r, "from"), "qat");
    check_model_fits(*model, data.test, r["from"].as<std::string>());
    check_model_arch(r, *model, require(r, "from"));
    memory_grows_with(fmt::format("--batch-size {} (the model of --from {})", cmd["batch_size"].get<int64_t>(),
                                  r["from"].as<std::string>()));
    check_training_memory(*model, data.train, cmd["batch_size"].get<int64_t>());
    cmd["float_accuracy"] = evaluate(*model, data.test).accuracy;
  }
  TrainOptions topt = checkpoint_options(r, out, cmd);
  topt.label = "qat";
  topt.before_step = qat_schedule_hook(cmd);
  TrainState st;
  quant::Evaluation fq;  // the fake-quant model, before convert
  const bool converted = quant::quantize_qat(
      *model,
      [&](nn::Module& m) {
        st = run_training(r, m, data, cmd, ck, topt);
        return !st.interrupted;
      },
      {.fuse = cmd["fuse"].get<bool>(),
       .qconfig = qconfig,
       .configure = [&](nn::Module& m) { apply_layer_bits(m, bits.layers, make_qconfig); },
       .before_convert = [&](nn::Module& m) { fq = evaluate(m, data.test); },
       .prepared = ck.has_value()});
  if (!converted) return report_interrupted(r, st, topt);
  const auto& stats = st.history;
  const double float_acc = cmd["float_accuracy"].get<double>();
  quant::set_int8_threads(*model, r["threads"].as<int>());
  const quant::Evaluation int8 = evaluate(*model, data.test);
  const double step = output_step(*model);
  if (dist::world().rank() == 0)  // data parallel: every rank holds the same int8 model, rank 0 writes it
    io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", int8.accuracy)}});
  dist::world().barrier();
  const double agree = quant::agreement(fq, int8), steps = quant::max_step_difference(fq, int8, step);
  json j = {{"float_accuracy", float_acc}, {"fake_quant_accuracy", fq.accuracy}, {"accuracy", int8.accuracy},
            {"agreement", agree}, {"max_step_diff", steps}, {"model_bytes", file_bytes(out)},
            {"seconds", seconds_since(t0)}, {"model", out}, {"weight_bits", cmd["weight_bits"]},
            {"activation_bits", cmd["activation_bits"]}, {"learnable_scale", lsq}};
  json epochs_j = json::array();
  for (size_t e = 0; e < stats.size(); ++e) {
    json ej = {{"epoch", e + 1}, {"loss", stats[e].loss}};
    if (stats[e].val_accuracy >= 0) ej["validation_accuracy"] = stats[e].val_accuracy;
    else ej["accuracy"] = stats[e].test_accuracy;
    epochs_j.push_back(ej);
  }
  j["epochs"] = epochs_j;
  if (st.best_epoch > 0) {
    j["best_epoch"] = st.best_epoch;
    j["validation_accuracy"] = st.best_val_accuracy;
  }
  finish(r, j,
         fmt::format("float {:.2f}% -> fake quant {:.2f}% -> int8 {:.2f}%; fake-quant vs int8 agreement {:.2f}%, "
                     "max difference {:.2f} steps; {} bytes -> {}\n",
                     float_acc, fq.accuracy, int8.accuracy, agree, steps, file_bytes(out), out));
  return 0;
}

}  // namespace tq::cli
