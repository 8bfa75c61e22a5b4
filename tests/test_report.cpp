// The HTML report (tools/cli/report.h, docs/report.md). The page is parsed by
// a real XML parser (libxml2): it must be well-formed XHTML, hold one <svg>
// per picture, each with a title and axis labels, and never a non-finite
// number in a coordinate — even when the data it is drawn from holds some.
#include <catch2/catch.hpp>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include <cctype>
#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "io/model_file.h"
#include "quant/layer.h"
#include "quant/qat_schedule.h"
#include "report.h"
#include "tinyqat.h"

using namespace tq;

namespace {

// Pictures of a full report: 2 training charts, 3 weight and 3 activation
// charts (one per layer of the three-layer model), 2 SQNR charts.
constexpr int kFullReportCharts = 10;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A parsed page with XPath over the XHTML and SVG namespaces.
struct Page {
  explicit Page(const std::string& html) {
    doc = xmlReadMemory(html.data(), static_cast<int>(html.size()), "report.html", "UTF-8",
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) return;
    context = xmlXPathNewContext(doc);
    xmlXPathRegisterNs(context, BAD_CAST "h", BAD_CAST "http://www.w3.org/1999/xhtml");
    xmlXPathRegisterNs(context, BAD_CAST "svg", BAD_CAST "http://www.w3.org/2000/svg");
  }
  ~Page() {
    if (context) xmlXPathFreeContext(context);
    if (doc) xmlFreeDoc(doc);
  }
  Page(const Page&) = delete;
  Page& operator=(const Page&) = delete;

  bool ok() const { return doc != nullptr; }

  // The nodes an XPath expression selects.
  std::vector<xmlNodePtr> nodes(const std::string& xpath, xmlNodePtr from = nullptr) const {
    std::vector<xmlNodePtr> out;
    context->node = from ? from : xmlDocGetRootElement(doc);
    xmlXPathObjectPtr r = xmlXPathEvalExpression(BAD_CAST xpath.c_str(), context);
    if (r && r->nodesetval)
      for (int i = 0; i < r->nodesetval->nodeNr; ++i) out.push_back(r->nodesetval->nodeTab[i]);
    if (r) xmlXPathFreeObject(r);
    return out;
  }
  static std::string text(xmlNodePtr n) {
    xmlChar* c = xmlNodeGetContent(n);
    std::string s = c ? reinterpret_cast<const char*>(c) : "";
    xmlFree(c);
    return s;
  }

  xmlDocPtr doc = nullptr;
  xmlXPathContextPtr context = nullptr;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Every attribute of every SVG element: no "nan" / "inf", and the geometric
// ones are lists of finite numbers. Returns how many attributes break that
// (each named in the test log).
int svg_number_problems(const Page& page) {
  static const std::vector<std::string> kNumeric = {"x", "y", "width", "height", "x1", "y1", "x2", "y2",
                                                    "cx", "cy", "r", "points", "viewBox"};
  int problems = 0, numeric = 0;
  for (xmlNodePtr n : page.nodes("//svg:svg//* | //svg:svg")) {
    for (xmlAttrPtr a = n->properties; a; a = a->next) {
      const std::string name = reinterpret_cast<const char*>(a->name);
      const std::string value = Page::text(reinterpret_cast<xmlNodePtr>(a));
      bool bad = lower(value).find("nan") != std::string::npos || lower(value).find("inf") != std::string::npos;
      if (std::find(kNumeric.begin(), kNumeric.end(), name) != kNumeric.end()) {
        std::string v = value;
        std::replace(v.begin(), v.end(), ',', ' ');
        const char* p = v.c_str();
        char* end = nullptr;
        int numbers = 0;
        for (double d = std::strtod(p, &end); end != p; d = std::strtod(p, &end)) {
          bad |= !std::isfinite(d);
          ++numbers;
          p = end;
        }
        while (*p == ' ') ++p;
        bad |= numbers == 0 || *p != '\0';  // nothing but numbers
        ++numeric;
      }
      if (bad) {
        UNSCOPED_INFO("bad attribute " << name << "=\"" << value << "\"");
        ++problems;
      }
    }
  }
  return numeric > 0 ? problems : 1;  // a page without coordinates checks nothing
}

// Each chart: a <title>, a drawn title and two non-empty axis labels.
void check_charts(const Page& page, int expected) {
  const auto svgs = page.nodes("//svg:svg");
  REQUIRE(static_cast<int>(svgs.size()) == expected);
  for (xmlNodePtr svg : svgs) {
    const auto title = page.nodes("svg:title", svg);
    REQUIRE(title.size() == 1);
    INFO("chart " << Page::text(title[0]));
    CHECK(!Page::text(title[0]).empty());
    CHECK(page.nodes(".//svg:text[@class='chart-title']", svg).size() == 1);
    const auto labels = page.nodes(".//svg:text[@class='axis-label']", svg);
    REQUIRE(labels.size() == 2);
    for (xmlNodePtr l : labels) CHECK(!Page::text(l).empty());
    CHECK(page.nodes(".//svg:text[@class='tick']", svg).size() >= 4);
  }
}

cli::ReportRun sample_run() {
  cli::ReportRun run;
  run.title = "test report";
  run.subtitle = "synthetic <data> & more";  // must be escaped
  run.float_history = {{0.6, 82.0, 1}, {0.45, 85.0, 1}, {0.4, 86.5, 1}};
  run.qat_history = {{0.38, 86.4, 1}};
  run.table = {{"float", 86.5, 100, "itself", 940000, 70, 1400},
               {"QAT int8", 86.4, 99.9, "fake quant", 248000, 100, 900},
               {"PTQ int8", 86.3, 99.0, "float", 248000, 100, 880},
               {"dynamic int8", 86.5, 99.8, "float", 247000, 100, 890}};
  run.fake_quant_accuracy = 86.4;
  return run;
}

cli::ReportData sample_data() {
  cli::ReportData d;
  d.run = sample_run();
  for (const char* layer : {"fc1", "fc2", "fc3"}) {
    cli::WeightPanel w;
    w.layer = layer;
    w.grid_from = "PTQ int8";
    w.channel = 3, w.channels = 8;
    w.scale = 0.01, w.zero_point = 0, w.quant_min = -128, w.quant_max = 127;
    w.weight_min = -1.2, w.weight_max = 1.275;
    w.histogram = {-1.28, 1.27, {1, 0, 3, 9, 20, 31, 20, 8, 2, 1}};
    d.weights.push_back(w);
    cli::ActivationPanel a;
    a.layer = layer;
    a.what = "output";
    a.histogram = {0, 8, {5000, 300, 80, 20, 5, 1, 0, 1}};
    a.seen_min = 0, a.seen_max = 8;
    a.ptq = cli::ChosenRange{0, 6.35, 0.05, 0, 0, 127};
    a.qat = cli::ChosenRange{0, 7.0, 7.0 / 127, 0, 0, 127};
    a.ptq_clipped_fraction = 0.0001;
    d.activations.push_back(a);
  }
  for (const char* method : {"QAT int8", "PTQ int8", "dynamic int8"}) {
    cli::SqnrSet s{method, {}, {}};
    for (const char* layer : {"fc1", "fc2", "fc3"}) {
      s.weights.push_back({layer, "Linear", "QuantizedLinear", 43.0, 0.01, 100});
      s.outputs.push_back({layer, "Linear", "QuantizedLinear", 35.0, 0.1, 100});
    }
    d.sqnr.push_back(s);
  }
  d.sqnr_samples = 100;
  return d;
}

// A small float MLP of library modules (so it can be saved and copied).
std::shared_ptr<nn::Sequential> small_mlp() {
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("fc1", nn::Linear(12, 16));
  m->push_back("relu1", nn::ReLU());
  m->push_back("fc2", nn::Linear(16, 8));
  m->push_back("relu2", nn::ReLU());
  m->push_back("fc3", nn::Linear(8, 4));
  return m;
}

std::shared_ptr<nn::Module> copy_of(const nn::Module& m) {
  return io::build_model(io::model_to_safetensors(m), "test copy");
}

nn::Module* find_in(nn::Module& model, const std::string& path) {
  for (auto& [p, m] : model.named_modules())
    if (p == path) return m;
  return nullptr;
}

}  // namespace

TEST_CASE("report: the page is well-formed XHTML with one titled, labelled svg per picture", "[report]") {
  const std::string html = cli::render_report(sample_data());
  Page page(html);
  REQUIRE(page.ok());
  const xmlNodePtr root = xmlDocGetRootElement(page.doc);
  CHECK(std::string(reinterpret_cast<const char*>(root->name)) == "html");
  REQUIRE(root->ns != nullptr);
  CHECK(std::string(reinterpret_cast<const char*>(root->ns->href)) == "http://www.w3.org/1999/xhtml");
  check_charts(page, kFullReportCharts);
  CHECK(svg_number_problems(page) == 0);
  // The summary table: a header row and one row per method.
  CHECK(page.nodes("//h:table/h:tr").size() == 5);
  // Text that needed escaping came through as text.
  CHECK(Page::text(page.nodes("//h:p[@class='subtitle']").at(0)) == "synthetic <data> & more");
  // Legends where there are several series; colours from the Okabe-Ito set.
  CHECK(page.nodes("//svg:g[@class='legend']").size() == static_cast<size_t>(kFullReportCharts));
  CHECK(html.find("#D55E00") != std::string::npos);
  // Self-contained: no script, no external resource.
  CHECK(page.nodes("//h:script").empty());
  CHECK(html.find("http://www.w3.org/1999/xhtml") != std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
  CHECK(html.find("href=") == std::string::npos);
}

TEST_CASE("report: the coordinate check itself finds non-finite numbers", "[report]") {
  const std::string head = R"(<html xmlns="http://www.w3.org/1999/xhtml"><body><svg xmlns="http://www.w3.org/2000/svg">)";
  const std::string tail = "</svg></body></html>";
  for (const char* bad : {R"(<rect x="nan" y="0" width="1" height="1"/>)", R"(<rect x="0" y="-inf" width="1" height="1"/>)",
                          R"(<polyline points="1,2 3,NaN"/>)", R"(<line x1="1e999" y1="0" x2="1" y2="1"/>)",
                          R"(<rect x="" y="0" width="1" height="1"/>)"}) {
    Page page(head + bad + tail);
    REQUIRE(page.ok());
    CHECK(svg_number_problems(page) == 1);
  }
  Page good(head + R"(<rect x="0.5" y="-1.0" width="1" height="1"/><polyline points="1,2 3,4"/>)" + tail);
  CHECK(svg_number_problems(good) == 0);
}

TEST_CASE("report: non-finite and empty data still give finite coordinates", "[report]") {
  cli::ReportData d = sample_data();
  d.run.float_history[1].loss = kNaN;
  d.run.qat_history[0].test_accuracy = kInf;
  d.weights[0].histogram.counts[2] = kNaN;
  d.weights[1].scale = kNaN;
  d.weights[2].histogram = {};  // no weights at all
  d.weights[2].weight_min = d.weights[2].weight_max = 0;
  d.activations[0].seen_max = kInf;
  d.activations[1].ptq->hi = kNaN;
  d.activations[2].histogram.counts = {0, 0, 0};
  d.sqnr[0].weights[0].sqnr_db = kInf;    // identical tensors
  d.sqnr[1].outputs[1].sqnr_db = -kInf;   // no signal
  d.sqnr[2].outputs[2].sqnr_db = kNaN;
  Page page(cli::render_report(d));
  REQUIRE(page.ok());
  check_charts(page, kFullReportCharts);
  CHECK(svg_number_problems(page) == 0);
}

TEST_CASE("report: an empty run gives a valid page without pictures", "[report]") {
  cli::ReportData d;
  Page page(cli::render_report(d));
  REQUIRE(page.ok());
  CHECK(page.nodes("//svg:svg").empty());
  CHECK(page.nodes("//h:p[@class='note']").size() >= 4);  // says what is missing
}

TEST_CASE("report: gathered from real QAT, PTQ and dynamic models", "[report]") {
  manual_seed(7);
  auto float_model = small_mlp();
  const Tensor x = randn({64, 12});
  const Tensor labels = randint(0, 4, {64});

  // QAT: fuse, prepare, a few training steps; keep the prepared model before convert.
  auto qat = copy_of(*float_model);
  quant::fuse_linear_relu(*qat);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  {
    nn::SGD sgd(qat->parameters(), {.lr = 0.05, .momentum = 0.9});
    nn::CrossEntropyLoss loss;
    for (int step = 0; step < 5; ++step) {
      sgd.zero_grad();
      loss((*qat)(x), labels).backward();
      sgd.step();
    }
  }
  auto qat_prepared = copy_of(*qat);
  quant::convert(*qat);

  // PTQ: histogram observers see a few batches; keep the calibrated model.
  auto ptq = copy_of(*float_model);
  quant::fuse_linear_relu(*ptq);
  ptq->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*ptq);
  {
    NoGradGuard no_grad;
    ptq->eval();
    for (int i = 0; i < 4; ++i) (*ptq)(randn({32, 12}));
  }
  auto ptq_calibrated = copy_of(*ptq);
  quant::convert(*ptq);

  auto dyn = copy_of(*float_model);
  quant::quantize_dynamic(*dyn);

  const cli::ReportModels models{float_model, qat_prepared, qat, ptq_calibrated, ptq, dyn};
  const std::string before = float_model->repr();
  const cli::ReportData d = cli::gather_report(sample_run(), models, x);
  CHECK(float_model->repr() == before);  // the models are left as they were

  REQUIRE(d.weights.size() == 3);
  for (auto& w : d.weights) {
    INFO(w.layer);
    CHECK(w.grid_from == "PTQ int8");
    CHECK(w.channel >= 0);  // per-channel weights: one channel shown
    CHECK(w.scale > 0);
    CHECK(w.quant_min == -128);
    CHECK(w.quant_max == 127);
    // The shown channel is the one with the largest scale, so its largest
    // |weight| fills the grid: 127.5 s within rounding.
    CHECK(std::max(-w.weight_min, w.weight_max) == Approx(127.5 * w.scale).epsilon(1e-4));
    double total = 0;
    for (double n : w.histogram.counts) total += n;
    CHECK(total == Approx(w.layer == "fc1" ? 12 : w.layer == "fc2" ? 16 : 8));  // in_features weights
  }
  REQUIRE(d.activations.size() == 3);
  for (auto& a : d.activations) {
    INFO(a.layer);
    REQUIRE(a.ptq);
    REQUIRE(a.qat);
    CHECK(!a.histogram.counts.empty());
    CHECK(a.histogram.counts.size() <= 128);
    double total = 0;
    for (double n : a.histogram.counts) total += n;
    CHECK(total == Approx(4 * 32 * (a.layer == "fc1" ? 16 : a.layer == "fc2" ? 8 : 4)).epsilon(1e-3));
    CHECK(a.ptq->hi > a.ptq->lo);
    CHECK(a.qat->hi > a.qat->lo);
    CHECK(a.ptq->hi <= a.seen_max + a.ptq->scale);  // the search only shrinks the seen range
    CHECK(a.ptq_clipped_fraction >= 0);
    CHECK(a.ptq_clipped_fraction < 0.5);
  }
  CHECK(d.activations[0].what.find("ReLU") != std::string::npos);  // fused
  CHECK(d.activations[2].what == "output");
  REQUIRE(d.sqnr.size() == 3);
  CHECK(d.sqnr[0].method == "QAT int8");
  CHECK(d.sqnr[1].method == "PTQ int8");
  CHECK(d.sqnr[2].method == "dynamic int8");
  for (auto& s : d.sqnr) {
    INFO(s.method);
    REQUIRE(s.weights.size() == 3);
    REQUIRE(s.outputs.size() == 3);
    // 8-bit weights: tens of dB; outputs lose more but stay well above 0.
    for (auto& r : s.weights) CHECK(r.sqnr_db > 30);
    for (auto& r : s.outputs) CHECK(r.sqnr_db > 10);
  }
  CHECK(d.sqnr_samples == 64);

  const std::string html = cli::render_report(d);
  Page page(html);
  REQUIRE(page.ok());
  check_charts(page, kFullReportCharts);
  CHECK(svg_number_problems(page) == 0);
}

TEST_CASE("report: the run file round-trips and write_report writes the page", "[report]") {
  const auto dir = std::filesystem::temp_directory_path() / "tinyqat_test_report";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / cli::kReportRunFile).string();
  const cli::ReportRun run = sample_run();
  cli::save_report_run(run, path);
  const cli::ReportRun back = cli::load_report_run(path);
  CHECK(back.title == run.title);
  CHECK(back.subtitle == run.subtitle);
  REQUIRE(back.float_history.size() == run.float_history.size());
  CHECK(back.float_history[2].test_accuracy == run.float_history[2].test_accuracy);
  REQUIRE(back.table.size() == run.table.size());
  CHECK(back.table[1].method == "QAT int8");
  CHECK(back.table[1].model_bytes == 248000);
  CHECK(back.fake_quant_accuracy == run.fake_quant_accuracy);

  manual_seed(3);
  cli::ReportModels models;
  models.float_model = small_mlp();
  models.dynamic_int8 = copy_of(*models.float_model);
  quant::quantize_dynamic(*models.dynamic_int8);
  const std::string page_path = cli::write_report((dir / "out").string(), run, models, randn({16, 12}));
  CHECK(page_path == (dir / "out" / cli::kReportFile).string());
  CHECK(std::filesystem::exists(page_path));
  CHECK(!std::filesystem::exists(page_path + ".tmp"));

  // A corrupt run file is an error naming the file.
  {
    std::ofstream f(path);
    f << "{ not json";
  }
  CHECK_THROWS_WITH(cli::load_report_run(path), Catch::Contains(path));
  std::filesystem::remove_all(dir);
}

TEST_CASE("report: a MobileNetV2 gets a weight panel per convolution (BN folded), an activation panel per conv and add",
          "[report][cnn]") {
  manual_seed(11);
  std::shared_ptr<nn::Module> float_model = models::mobilenet_v2_small_input(4, 0.25);
  const Tensor x = randn({16, 1, 12, 12});
  const Tensor labels = randint(0, 4, {16});
  auto train_steps = [&](nn::Module& m, int steps) {
    nn::SGD sgd(m.parameters(), {.lr = 0.01, .momentum = 0.9});
    nn::CrossEntropyLoss loss;
    m.train();
    for (int step = 0; step < steps; ++step) {
      sgd.zero_grad();
      loss(m(x), labels).backward();
      sgd.step();
    }
  };
  train_steps(*float_model, 3);  // BatchNorm statistics away from 0 / 1: folding matters
  float_model->eval();
  int convs = 0, adds = 0;
  for (auto& [path, m] : float_model->named_modules()) {
    convs += dynamic_cast<nn::Conv2d*>(m) != nullptr;
    adds += dynamic_cast<nn::Add*>(m) != nullptr;
  }
  REQUIRE(convs == 52);
  REQUIRE(adds > 0);

  // QAT: fused in training mode (ConvBn kept), a few steps, BN frozen, converted.
  auto qat = copy_of(*float_model);
  qat->train();
  quant::fuse_known_modules(*qat);
  qat->qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(*qat);
  train_steps(*qat, 2);
  quant::freeze_bn_stats(*qat);
  train_steps(*qat, 2);
  qat->eval();
  auto qat_prepared = copy_of(*qat);
  quant::convert(*qat);
  // PTQ: fused in eval mode (BN folded), calibrated, converted.
  auto ptq = copy_of(*float_model);
  ptq->eval();
  quant::fuse_known_modules(*ptq);
  ptq->qconfig = quant::get_default_qconfig("x86");
  quant::prepare(*ptq);
  {
    NoGradGuard no_grad;
    (*ptq)(x);
  }
  auto ptq_calibrated = copy_of(*ptq);
  quant::convert(*ptq);
  auto dyn = copy_of(*float_model);
  quant::quantize_dynamic(*dyn);

  const cli::ReportModels models{float_model, qat_prepared, qat, ptq_calibrated, ptq, dyn};
  const cli::ReportData d = cli::gather_report(sample_run(), models, reshape(x, {16, 144}));

  // A weight panel per convolution and the classifier, on the PTQ grid, of
  // the weights the int8 layer rounded: with BatchNorm folded in, the shown
  // (largest-scale) channel's largest |weight| fills the grid exactly.
  REQUIRE(d.weights.size() == static_cast<size_t>(convs + 1));
  for (auto& w : d.weights) {
    INFO(w.layer);
    CHECK(w.grid_from == "PTQ int8");
    CHECK(w.channel >= 0);
    quant::QuantLayer* layer = quant::as_quant_layer(find_in(*ptq, w.layer));
    REQUIRE(layer);
    const Tensor qw = layer->effective_weight();
    double total = 0;
    for (double n : w.histogram.counts) total += n;
    CHECK(total == Approx(static_cast<double>(qw.numel() / qw.size(0))));
    CHECK(std::max(-w.weight_min, w.weight_max) == Approx(127.5 * w.scale).epsilon(1e-4));
  }
  CHECK(d.weights.front().layer == "features.0.0");
  CHECK(d.weights.back().layer == "classifier.1");
  // An activation panel per convolution, residual add and the classifier.
  REQUIRE(d.activations.size() == static_cast<size_t>(convs + adds + 1));
  int add_panels = 0;
  for (auto& a : d.activations) {
    INFO(a.layer);
    CHECK(a.ptq);
    CHECK(a.qat);
    add_panels += a.layer.ends_with("skip_add");
  }
  CHECK(add_panels == adds);
  // SQNR against the folded float weights: PTQ's 8-bit per-channel weights
  // give tens of dB (against the unfolded ones they would not). QAT is
  // measured against its own fine-tuned weights and BatchNorm statistics; its
  // moving-average weight ranges lag behind four large steps on random data,
  // so some weights are clipped and its bars are lower (still well above 0).
  REQUIRE(d.sqnr.size() == 3);
  CHECK(d.sqnr[0].method == "QAT int8");
  CHECK(d.sqnr[1].method == "PTQ int8");
  for (int m = 0; m < 2; ++m) {
    INFO(d.sqnr[m].method);
    CHECK(d.sqnr[m].weights.size() == static_cast<size_t>(convs + 1));
    CHECK(d.sqnr[m].outputs.size() == static_cast<size_t>(convs + adds + 1));
    for (auto& r : d.sqnr[m].weights) {
      INFO(r.name);
      CHECK(r.sqnr_db > (m == 1 ? 30 : 15));
    }
  }
  CHECK(d.sqnr[2].weights.size() == 1);  // dynamic: the classifier alone

  const std::string html = cli::render_report(d);
  Page page(html);
  REQUIRE(page.ok());
  check_charts(page, 2 + (convs + 1) + (convs + adds + 1) + 2);
  CHECK(svg_number_problems(page) == 0);
  int weight_charts = 0;
  for (xmlNodePtr t : page.nodes("//svg:svg/svg:title")) weight_charts += Page::text(t).find(" weights, ") != std::string::npos;
  CHECK(weight_charts == convs + 1);
  CHECK(page.nodes("//h:div[@class='wide']").size() == 2);  // the two SQNR charts, scrolled sideways
}
