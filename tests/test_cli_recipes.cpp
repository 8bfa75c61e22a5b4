// The training recipe on the command line (docs/cli.md "Training recipes"):
// optimizers, schedules, the validation split, augmentation, clipping and the
// QAT schedule, their exact resume, and `tinyqat sweep`; on a few hundred
// images, so each run takes a moment.
#include <catch2/catch.hpp>

#include "test_files.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/training_state.h"

namespace {

using json = nlohmann::json;

std::string binary() { return std::string(TINYQAT_BINARY_DIR) + "/tinyqat"; }

std::string read_all(const std::string& path) { return tq_test::read_bytes(path); }

struct Dir {
  std::string path;
  explicit Dir(const std::string& name) : path((std::filesystem::temp_directory_path() / name).string()) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  std::string operator/(const std::string& f) const { return path + "/" + f; }
};

// Exit status of `tinyqat <args> --threads 1`; stdout and stderr go to files in `dir`.
int run(const std::string& args, const Dir& dir) {
  const std::string cmd = binary() + " " + args + " --threads 1 > " + dir / "stdout.txt" + " 2> " + dir / "stderr.txt";
  const int status = std::system(cmd.c_str());
  return tq_test::exit_code(status);
}

json run_json(const std::string& args, const Dir& dir) {
  const int status = run(args + " --json", dir);
  INFO(read_all(dir / "stderr.txt"));
  REQUIRE(status == 0);
  return json::parse(read_all(dir / "stdout.txt"));
}

const std::string kTiny = "--hidden 16 --batch-size 32 --limit-train 600 --limit-test 300";

}  // namespace

TEST_CASE("train: AdamW, warm-up + cosine, validation, augmentation and clipping resume bit for bit", "[cli][recipes][resume]") {
  const Dir dir("tinyqat_recipe_resume");
  // 500 training images after the validation split: 16 batches an epoch, 48 in all.
  const std::string recipe = "train --epochs 3 " + kTiny +
                             " --optimizer adamw --lr 0.003 --weight-decay 0.05 --lr-schedule cosine --warmup 0.5"
                             " --val 100 --augment --clip-grad 1.0";
  const json straight = run_json(recipe + " --out " + dir / "straight.st", dir);
  // Stop inside the second epoch, after the best snapshot of epoch 1 exists; checkpoints every 10 steps.
  REQUIRE(run(recipe + " --out " + dir / "resumed.st --checkpoint-every 10 --stop-after 25", dir) == 0);
  REQUIRE_FALSE(std::filesystem::exists(dir / "resumed.st"));
  const tq::io::SafetensorsFile ck = tq::io::load_safetensors(dir / "resumed.st.ckpt");
  CHECK(tq::io::get_state(ck, "__optimizer__", "ck").kind == "AdamW");
  CHECK(tq::io::has_state(ck, "__lr_scheduler__"));
  CHECK(ck.tensors.count("__best__.fc1.weight") == 1);
  const json resumed = run_json("train --out " + dir / "resumed.st --resume " + dir / "resumed.st.ckpt", dir);
  CHECK(read_all(dir / "straight.st") == read_all(dir / "resumed.st"));
  CHECK(straight["accuracy"] == resumed["accuracy"]);
  CHECK(straight["best_epoch"] == resumed["best_epoch"]);
  // Each epoch reports validation accuracy, and the test accuracy belongs to the best epoch's weights.
  REQUIRE(straight["epochs"].size() == 3);
  double best = -1;
  for (const auto& e : straight["epochs"]) {
    CHECK_FALSE(e.contains("accuracy"));
    best = std::max(best, e["validation_accuracy"].get<double>());
  }
  CHECK(straight["validation_accuracy"].get<double>() == best);
  CHECK(straight["accuracy"].get<double>() > 30.0);  // it learned something on 500 images
  // Each setting changes the result (so each is really used).
  const json no_clip = run_json("train --epochs 3 " + kTiny +
                                    " --optimizer adamw --lr 0.003 --weight-decay 0.05 --lr-schedule cosine --warmup 0.5"
                                    " --val 100 --augment --out " + dir / "c.st",
                                dir);
  CHECK(read_all(dir / "c.st") != read_all(dir / "straight.st"));
  const json no_aug = run_json("train --epochs 3 " + kTiny +
                                   " --optimizer adamw --lr 0.003 --weight-decay 0.05 --lr-schedule cosine --warmup 0.5"
                                   " --val 100 --clip-grad 1.0 --out " + dir / "a.st",
                               dir);
  CHECK(read_all(dir / "a.st") != read_all(dir / "straight.st"));
}

TEST_CASE("train: SGD with a step schedule resumes bit for bit; without recipe options nothing changes", "[cli][recipes][resume]") {
  const Dir dir("tinyqat_recipe_sgd");
  const std::string recipe = "train --epochs 2 " + kTiny + " --lr 0.05 --weight-decay 1e-3 --lr-schedule multistep --milestones 1";
  run_json(recipe + " --out " + dir / "straight.st", dir);
  REQUIRE(run(recipe + " --out " + dir / "resumed.st --checkpoint-every 7 --stop-after 22", dir) == 0);
  CHECK(tq::io::get_state(tq::io::load_safetensors(dir / "resumed.st.ckpt"), "__optimizer__", "ck").kind == "SGD");
  run_json("train --out " + dir / "resumed.st --resume " + dir / "resumed.st.ckpt", dir);
  CHECK(read_all(dir / "straight.st") == read_all(dir / "resumed.st"));
  // The defaults are the plain recipe: --optimizer sgd --lr-schedule constant spelled out changes no bit.
  run_json("train --epochs 1 " + kTiny + " --out " + dir / "plain.st", dir);
  run_json("train --epochs 1 " + kTiny + " --optimizer sgd --lr-schedule constant --weight-decay 0 --out " + dir / "spelled.st", dir);
  CHECK(read_all(dir / "plain.st") == read_all(dir / "spelled.st"));
}

TEST_CASE("qat: Adam, LSQ, observer freezing and validation resume bit for bit", "[cli][recipes][resume]") {
  const Dir dir("tinyqat_recipe_qat");
  run_json("train --epochs 1 " + kTiny + " --out " + dir / "float.st", dir);
  const std::string recipe = "qat --from " + dir / "float.st" +
                             " --batch-size 32 --limit-train 600 --limit-test 300 --epochs 3 --weight-bits 4 "
                             "--activation-bits 4 --learnable-scale --optimizer adam --lr 1e-3 --lr-schedule cosine "
                             "--val 0.2 --freeze-observers-after 1 --freeze-bn-after 2";
  const json straight = run_json(recipe + " --out " + dir / "straight.st", dir);
  REQUIRE(run(recipe + " --out " + dir / "resumed.st --checkpoint-every 5 --stop-after 20", dir) == 0);
  run_json("qat --out " + dir / "resumed.st --resume " + dir / "resumed.st.ckpt", dir);
  CHECK(read_all(dir / "straight.st") == read_all(dir / "resumed.st"));
  CHECK(straight["best_epoch"].get<int>() >= 1);
  CHECK(straight["agreement"].get<double>() > 90.0);
  // With moving-average fake quant, freezing the observers after the first epoch changes the result.
  const std::string ma = "qat --from " + dir / "float.st" +
                         " --batch-size 32 --limit-train 600 --limit-test 300 --epochs 2 --bits 4 --optimizer adam "
                         "--lr 1e-3 --out ";
  run_json(ma + dir / "free.st", dir);
  run_json(ma + dir / "frozen.st --freeze-observers-after 1", dir);
  CHECK(read_all(dir / "free.st") != read_all(dir / "frozen.st"));
}

TEST_CASE("train and qat: bad recipe options are usage errors naming the option", "[cli][recipes][errors]") {
  const Dir dir("tinyqat_recipe_errors");
  const std::string base = "train --epochs 1 " + kTiny + " --out " + dir / "m.st ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--optimizer rmsprop", "--optimizer"},      {"--lr-schedule wavy", "--lr-schedule"},
      {"--weight-decay -1", "--weight-decay"},     {"--warmup -2", "--warmup"},
      {"--lr-schedule multistep", "--milestones"}, {"--milestones 2", "--milestones"},
      {"--val 2.5", "--val"},                      {"--val 600", "--val"},
      {"--clip-grad -1", "--clip-grad"},           {"--gamma 0", "--gamma"},
      {"--lr-schedule cosine --warmup 1", "--warmup"},
  };
  for (const auto& [args, name] : cases) {
    INFO(args);
    CHECK(run(base + args, dir) == 2);
    const std::string err = read_all(dir / "stderr.txt");
    INFO(err);
    CHECK(err.find(name) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "m.st"));
  }
  CHECK(run("qat --from " + dir / "none.st --freeze-observers-after -1 --out " + dir / "q.st", dir) == 2);
  CHECK(read_all(dir / "stderr.txt").find("--freeze-observers-after") != std::string::npos);
}

TEST_CASE("sweep: a recipe over seeds, mean and sd per row, the same numbers as the single runs", "[cli][recipes][sweep]") {
  const Dir dir("tinyqat_sweep");
  const json j = run_json("sweep --seeds 0-1 --workdir " + dir.path + " --train \"--epochs 1 " + kTiny +
                              "\" --qat \"--epochs 1 --batch-size 32 --limit-train 600 --limit-test 300 "
                              "--learnable-scale\" --configs w4a4,w8a8",
                          dir);
  REQUIRE(j["rows"].size() == 3);
  CHECK(j["rows"][0]["row"] == "float");
  CHECK(j["rows"][1]["row"] == "W4A4");
  CHECK(j["rows"][2]["row"] == "W8A8");
  CHECK(j["runs"].size() == 6);
  for (const auto& row : j["rows"]) {
    const auto a = row["accuracies"].get<std::vector<double>>();
    REQUIRE(a.size() == 2);
    const double m = (a[0] + a[1]) / 2, sd = std::abs(a[0] - a[1]) / std::sqrt(2.0);
    CHECK(row["mean"].get<double>() == Approx(m));
    CHECK(row["sd"].get<double>() == Approx(sd).margin(1e-12));
    CHECK(row["worst"].get<double>() == std::min(a[0], a[1]));
  }
  // Seed 1's float model is what `train --seed 1` makes.
  run_json("train --epochs 1 " + kTiny + " --seed 1 --out " + dir / "single.st", dir);
  CHECK(read_all(dir / "single.st") == read_all(dir / "float_seed1.safetensors"));
  CHECK(j["rows"][0]["accuracies"][0] != j["rows"][0]["accuracies"][1]);  // the seeds differ
  // The table.
  REQUIRE(run("sweep --seeds 3 --workdir " + dir.path + " --train \"--epochs 1 " + kTiny + "\"", dir) == 0);
  const std::string table = read_all(dir / "stdout.txt");
  CHECK(table.find("| float | ") != std::string::npos);
  CHECK(table.find(" ± 0.00%") != std::string::npos);
  // Bad input.
  CHECK(run("sweep --seeds 4-2 --workdir " + dir.path, dir) == 2);
  CHECK(run("sweep --seeds x --workdir " + dir.path, dir) == 2);
  CHECK(run("sweep --seeds 0-999,1000-1999 --workdir " + dir.path, dir) == 2);  // each range allowed, the total not
  CHECK(read_all(dir / "stderr.txt").find("names 2000 seeds, more than 1000") != std::string::npos);
  CHECK(run("sweep --seeds 0-3,2 --workdir " + dir.path, dir) == 2);
  CHECK(read_all(dir / "stderr.txt").find("names seed 2 twice") != std::string::npos);
  CHECK(run("sweep --train \"--seed 3\" --workdir " + dir.path, dir) == 2);
  CHECK(read_all(dir / "stderr.txt").find("--seed is set by the sweep") != std::string::npos);
  CHECK(run("sweep --configs w4a4 --workdir " + dir.path, dir) == 2);
  CHECK(run("sweep --seeds 0 --workdir " + dir.path + " --train \"--epochs 0\"", dir) == 1);
  CHECK(read_all(dir / "stderr.txt").find("tinyqat train: --epochs 0 must be") != std::string::npos);  // train's own message, relayed
}

TEST_CASE("lowbit: the recipe options reach every QAT run; bad ones are usage errors naming the option", "[cli][recipes][lowbit]") {
  const Dir dir("tinyqat_recipe_lowbit");
  run_json("train --epochs 1 " + kTiny + " --out " + dir / "float.st", dir);
  const std::string base = "lowbit --from " + dir / "float.st" +
                           " --configs w4a4 --epochs 2 --batch-size 32 --limit-train 600 --limit-test 300 --workdir ";
  const json plain = run_json(base + dir / "plain", dir);
  REQUIRE(plain["rows"].size() == 1);
  CHECK(plain["recipe"]["optimizer"] == "sgd");
  CHECK_FALSE(plain["rows"][0].contains("lsq_best_epoch"));
  // lowbit's LSQ run is what `tinyqat qat` makes with the same recipe.
  const std::string recipe = " --optimizer adamw --lr 0.003 --weight-decay 0.01 --lr-schedule cosine --warmup 0.5 --val 100"
                             " --augment --clip-grad 1 --freeze-observers-after 1";
  const json with = run_json(base + dir / "recipe" + recipe, dir);
  CHECK(with["recipe"]["optimizer"] == "adamw");
  CHECK(with["recipe"]["val"] == 100.0);
  CHECK(with["rows"][0]["lsq_best_epoch"].get<int>() >= 1);
  CHECK(with["rows"][0]["qat_best_epoch"].get<int>() >= 1);
  const json single = run_json("qat --from " + dir / "float.st" +
                                   " --epochs 2 --batch-size 32 --limit-train 600 --limit-test 300 --weight-bits 4"
                                   " --activation-bits 4 --learnable-scale --out " + dir / "single.st" + recipe,
                               dir);
  CHECK(single["accuracy"] == with["rows"][0]["lsq_accuracy"]);
  CHECK(single["fake_quant_accuracy"] == with["rows"][0]["lsq_fake_quant_accuracy"]);
  CHECK(single["best_epoch"] == with["rows"][0]["lsq_best_epoch"]);
  // Each option alone changes the trained models.
  const std::string plain_lsq = read_all(dir / "plain/w4a4_lsq.safetensors");
  const std::string plain_ma = read_all(dir / "plain/w4a4_qat.safetensors");
  for (const std::string option : {"--optimizer adam --lr 0.001", "--weight-decay 0.05", "--lr-schedule cosine", "--warmup 0.5",
                                   "--val 100", "--augment", "--clip-grad 0.05", "--batch-size 48", "--momentum 0.5",
                                   "--freeze-observers-after 1"}) {
    INFO(option);
    run_json(base + dir / "one " + option, dir);
    CHECK(read_all(dir / "one/w4a4_qat.safetensors") != plain_ma);
    if (std::string(option) != "--freeze-observers-after 1")  // LSQ's step sizes learn; there is no observer to stop
      CHECK(read_all(dir / "one/w4a4_lsq.safetensors") != plain_lsq);
  }
  // The defaults spelled out change no bit.
  run_json(base + dir / "spelled --optimizer sgd --lr-schedule constant --weight-decay 0 --momentum 0.9 --batch-size 32", dir);
  CHECK(read_all(dir / "spelled/w4a4_lsq.safetensors") == plain_lsq);
  // Bad values: exit 2, the option named, nothing written.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--optimizer rmsprop", "--optimizer"}, {"--lr-schedule wavy", "--lr-schedule"}, {"--weight-decay -1", "--weight-decay"},
      {"--warmup -2", "--warmup"},            {"--val 2.5", "--val"},                  {"--val 600", "--val"},
      {"--clip-grad -1", "--clip-grad"},      {"--batch-size 0", "--batch-size"},      {"--momentum 2", "--momentum"},
      {"--freeze-observers-after -1", "--freeze-observers-after"}, {"--limit-train -5", "--limit-train"},
      {"--lr-schedule cosine --warmup 2", "--warmup"},
  };
  for (const auto& [args, name] : cases) {
    INFO(args);
    CHECK(run(base + dir / "bad " + args, dir) == 2);
    const std::string err = read_all(dir / "stderr.txt");
    INFO(err);
    CHECK(err.find(name) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir / "bad/w4a4_lsq.safetensors"));
  }
}
