// tinyqat train: the float MLP on Fashion-MNIST, saved as a model file
// (docs/cli.md "train"); checkpoints and --resume as in common.h.
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "io/model_file.h"
#include "tensor/random.h"

namespace tq::cli {

int run_train(int argc, char** argv) {
  cxxopts::Options o("tinyqat train", "Train the float MLP on Fashion-MNIST and save it.");
  o.add_options()("hidden", "hidden layer sizes", cxxopts::value<std::string>()->default_value("256,128"))(
      "epochs", "epochs", cxxopts::value<int>()->default_value("5"))("batch-size", "batch size", cxxopts::value<int64_t>()->default_value("64"))(
      "lr", "learning rate", cxxopts::value<double>()->default_value("0.01"))("momentum", "SGD momentum", cxxopts::value<double>()->default_value("0.9"))(
      "seed", "random seed (initialisation and shuffling)", cxxopts::value<uint64_t>()->default_value("0"))(
      "out", "model file to write", cxxopts::value<std::string>());
  add_common(o);
  add_checkpointing(o);
  auto r = parse(o, argc, argv);
  apply_threads(r);
  const std::string out = require(r, "out");
  check_output_path(out);

  // The run's options: from the command line, or from the checkpoint being resumed.
  json cmd = {{"command", "train"}, {"hidden", r["hidden"].as<std::string>()}, {"epochs", r["epochs"].as<int>()},
              {"batch_size", r["batch-size"].as<int64_t>()}, {"lr", r["lr"].as<double>()},
              {"momentum", r["momentum"].as<double>()}, {"seed", r["seed"].as<uint64_t>()}};
  const std::optional<Checkpoint> ck = resume_checkpoint(r, "train", cmd);
  const auto hidden = parse_hidden(cmd["hidden"].get<std::string>());
  const int epochs = cmd["epochs"].get<int>();
  const int64_t batch_size = cmd["batch_size"].get<int64_t>();
  const uint64_t seed = cmd["seed"].get<uint64_t>();
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  if (batch_size < 1) throw UsageError("--batch-size must be at least 1");
  const FashionMnist data = load_data(r);

  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<nn::Module> model;
  if (ck) {
    model = ck->model;
    default_generator().set_state(ck->global_rng);
  } else {
    manual_seed(seed);
    model = make_mlp(data.train.images.size(1) * data.train.images.size(2), hidden, data.train.num_classes);
  }
  TrainOptions topt = checkpoint_options(r, out, cmd);
  topt.label = "train";
  const TrainState st = run_training(r, *model, data, cmd, ck, topt);
  if (st.interrupted) return report_interrupted(r, st, topt);
  const auto& stats = st.history;
  const double secs = seconds_since(t0);
  io::save_model(*model, out, {{"accuracy", fmt::format("{:.2f}", stats.back().test_accuracy)}});
  json j = {{"accuracy", stats.back().test_accuracy}, {"seconds", secs}, {"model_bytes", file_bytes(out)}, {"model", out}};
  json epochs_j = json::array();
  std::string summary;
  for (size_t e = 0; e < stats.size(); ++e) {
    epochs_j.push_back({{"epoch", e + 1}, {"loss", stats[e].loss}, {"accuracy", stats[e].test_accuracy}, {"seconds", stats[e].seconds}});
    summary += fmt::format("epoch {:>2}  loss {:.4f}  test accuracy {:.2f}%  ({:.1f} s)\n", e + 1, stats[e].loss,
                           stats[e].test_accuracy, stats[e].seconds);
  }
  j["epochs"] = epochs_j;
  summary += fmt::format("float model: test accuracy {:.2f}%, {} bytes, {:.1f} s -> {}\n", stats.back().test_accuracy,
                         file_bytes(out), secs, out);
  finish(r, j, summary);
  return 0;
}

}  // namespace tq::cli
