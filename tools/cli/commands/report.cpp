// tinyqat report: redraw the pipeline's HTML report from the model files it
// left in its workdir (docs/cli.md "report", docs/report.md).
#include <fmt/format.h>

#include "commands.h"
#include "common.h"
#include "report.h"

namespace tq::cli {

int run_report(int argc, char** argv) {
  cxxopts::Options o("tinyqat report",
                     "Write report.html (inline SVG pictures) from the model files that 'tinyqat pipeline --report' left in a workdir.");
  o.add_options()("workdir", "the pipeline's workdir", cxxopts::value<std::string>()->default_value("models"))(
      "out", "directory for report.html (default: the workdir)", cxxopts::value<std::string>())(
      "samples", "test images for the output SQNR", cxxopts::value<int64_t>()->default_value("1000"));
  add_common(o);
  auto r = parse(o, argc, argv, kReportFile);  // --out is a directory
  apply_threads(r);
  const std::string wd = r["workdir"].as<std::string>();
  const std::string out = r.count("out") ? r["out"].as<std::string>() : wd;
  if (r["samples"].as<int64_t>() < 1) throw UsageError("--samples must be at least 1");
  const io::Dataset test_set = io::load_fashion_mnist(r["data"].as<std::string>(), io::Split::test);
  memory_grows_with(fmt::format("--samples {} (run as one batch)", r["samples"].as<int64_t>()));
  const std::string page = write_report_from_workdir(wd, out, test_set, r["samples"].as<int64_t>());
  finish(r, json{{"report", page}}, fmt::format("report: {}\n", page));
  return 0;
}

}  // namespace tq::cli
