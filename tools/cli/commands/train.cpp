// tinyqat train: a float network on Fashion-MNIST (the MLP, the small CNN or
// a MobileNetV2 for 28x28 one-channel images), saved as a model file
// (docs/cli.md "train"); checkpoints and --resume as in common.h.
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "models/cnn.h"
#include "models/mobilenet_v2.h"
#include "tensor/communicator.h"
#include "tensor/random.h"

namespace tq::cli {

namespace {

// The float network `cmd` names, freshly initialised from the global generator.
std::shared_ptr<nn::Module> make_model(const json& cmd, const FashionMnist& data) {
  return cli::make_model(cmd["arch"].get<std::string>(), cmd["width"].get<double>(), cmd["hidden"].get<std::string>(),
                         data.train.images.size(1) * data.train.images.size(2), data.train.num_classes);
}

}  // namespace

int run_train(int argc, char** argv) {
  cxxopts::Options o("tinyqat train", "Train a float network (MLP, CNN or MobileNetV2) on Fashion-MNIST and save it.");
  o.add_options()("arch", "architecture: mlp, cnn or mobilenet_v2", cxxopts::value<std::string>()->default_value("mlp"))(
      "width", "width multiplier of mobilenet_v2", cxxopts::value<double>()->default_value("1.0"))(
      "hidden", "hidden layer sizes of the mlp", cxxopts::value<std::string>()->default_value("256,128"))(
      "epochs", "epochs", cxxopts::value<int>()->default_value("5"))(
      "lr", "learning rate", cxxopts::value<double>()->default_value("0.01"))(
      "seed", "random seed (initialisation and shuffling)", cxxopts::value<uint64_t>()->default_value("0"))(
      "out", "model file to write", cxxopts::value<std::string>());
  add_limits(o);
  add_common(o);
  add_recipe(o);
  add_checkpointing(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string out = require(r, "out");
  check_output_path(out);

  // The run's options: from the command line, or from the checkpoint being resumed.
  const std::string arch = r["arch"].as<std::string>();
  if (arch != "mlp" && arch != "cnn" && arch != "mobilenet_v2")
    throw UsageError(fmt::format("--arch must be mlp, cnn or mobilenet_v2, not '{}'", arch));
  if (arch != "mlp" && r.count("hidden")) throw UsageError(fmt::format("--hidden is for --arch mlp, not {}", arch));
  if (arch != "mobilenet_v2" && r.count("width")) throw UsageError(fmt::format("--width is for --arch mobilenet_v2, not {}", arch));
  if (!(r["width"].as<double>() > 0) || r["width"].as<double>() > 4)
    throw UsageError(fmt::format("--width must be in (0, 4], not {}", r["width"].as<double>()));
  json cmd = {{"command", "train"}, {"arch", arch}, {"width", r["width"].as<double>()},
              {"hidden", r["hidden"].as<std::string>()}, {"epochs", r["epochs"].as<int>()},
              {"batch_size", r["batch-size"].as<int64_t>()}, {"lr", r["lr"].as<double>()},
              {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}};
  limits_to_command(r, cmd, true);
  recipe_to_command(r, cmd);
  const std::optional<Checkpoint> ck = resume_checkpoint(r, "train", cmd);
  // Checkpoints written before --arch were all of the MLP.
  if (!cmd.contains("arch")) cmd.update({{"arch", "mlp"}, {"width", 1.0}, {"limit_train", 0}, {"limit_test", 0}});
  parse_hidden(cmd["hidden"].get<std::string>());  // a bad --hidden is a usage error before any data is read
  const int epochs = cmd["epochs"].get<int>();
  const int64_t batch_size = cmd["batch_size"].get<int64_t>();
  const uint64_t seed = cmd["seed"].get<uint64_t>();
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  FashionMnist data = load_data(r);
  apply_limits(cmd, data);
  check_batch_fits(cmd, data.train.size());
  const std::string arch_now = cmd["arch"].get<std::string>();
  memory_grows_with(fmt::format("--batch-size {}{}", batch_size,
                                arch_now == "mlp"            ? fmt::format(" and --hidden {}", cmd["hidden"].get<std::string>())
                                : arch_now == "mobilenet_v2" ? fmt::format(" and --width {}", cmd["width"].get<double>())
                                                             : std::string(" (--arch cnn)")));

  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<nn::Module> model;
  if (ck) {
    model = ck->model;
    default_generator().set_state(ck->global_rng);
  } else {
    manual_seed(seed);
    model = make_model(cmd, data);
  }
  TrainOptions topt = checkpoint_options(r, out, cmd);
  topt.label = "train";
  const TrainState st = run_training(r, *model, data, cmd, ck, topt);
  if (st.interrupted) return report_interrupted(r, st, topt);
  const auto& stats = st.history;
  const double secs = seconds_since(t0);
  if (dist::world().rank() == 0)  // data parallel: every rank holds the same model, rank 0 writes it
    io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", st.test_accuracy)}});
  dist::world().barrier();  // the file is there before any rank reports
  json j = {{"accuracy", st.test_accuracy}, {"seconds", secs}, {"model_bytes", file_bytes(out)}, {"model", out}};
  json epochs_j = json::array();
  std::string summary;
  for (size_t e = 0; e < stats.size(); ++e) {
    json ej = {{"epoch", e + 1}, {"loss", stats[e].loss}, {"seconds", stats[e].seconds}};
    if (stats[e].val_accuracy >= 0) {
      ej["validation_accuracy"] = stats[e].val_accuracy;
      summary += fmt::format("epoch {:>2}  loss {:.4f}  validation accuracy {:.2f}%  ({:.1f} s)\n", e + 1, stats[e].loss,
                             stats[e].val_accuracy, stats[e].seconds);
    } else {
      ej["accuracy"] = stats[e].test_accuracy;
      summary += fmt::format("epoch {:>2}  loss {:.4f}  test accuracy {:.2f}%  ({:.1f} s)\n", e + 1, stats[e].loss,
                             stats[e].test_accuracy, stats[e].seconds);
    }
    epochs_j.push_back(ej);
  }
  j["epochs"] = epochs_j;
  if (st.best_epoch > 0) {
    j["best_epoch"] = st.best_epoch;
    j["validation_accuracy"] = st.best_val_accuracy;
    summary += fmt::format("best validation epoch {} ({:.2f}%): its weights are kept\n", st.best_epoch, st.best_val_accuracy);
  }
  summary += fmt::format("float model: test accuracy {:.2f}%, {} bytes, {:.1f} s -> {}\n", st.test_accuracy,
                         file_bytes(out), secs, out);
  finish(r, j, summary);
  return 0;
}

}  // namespace tq::cli
