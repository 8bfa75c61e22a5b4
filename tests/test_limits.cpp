// Hostile sizes and values the library refuses with a clear error instead of
// hanging, overflowing or computing garbage (docs/reliability.md §4): the
// readers' size limits, each named in its error, and each reader linear in
// its input; checked element and byte counts; values that must be finite or
// in range (quantization parameters, optimizer settings and state, the
// random generator's state, weights about to be quantized).
//
// A maximal input is read here to show the reader is fast enough on it; the
// only timing check is a generous bound against a hang (the quadratic reader
// took minutes on these inputs), not a performance assertion.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/data_loader.h"
#include "io/idx.h"
#include "io/npy.h"
#include "io/model_file.h"
#include "io/model_limits.h"
#include "io/packing.h"
#include "io/safetensors.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "nn/sgd.h"
#include "quant/checks.h"
#include "quant/observer.h"
#include "quant/qparams.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace {

using Catch::Matchers::Contains;
using namespace tq;

// Far above what the linear readers need (well under a second), far below
// what the quadratic ones took (minutes).
constexpr double kHangSeconds = 30;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string with_length(const std::string& header) {
  std::string b(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return b + header;
}

// A header of n empty tensors "t0", "t1", ... (no data bytes needed).
std::string header_of_empty_tensors(size_t n) {
  std::string h = "{";
  for (size_t i = 0; i < n; ++i) {
    if (i) h += ',';
    h += "\"t" + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  }
  return h + "}";
}

std::string format_error_of(const std::string& bytes) {
  try {
    io::parse_safetensors(bytes, "hostile.safetensors");
  } catch (const io::FormatError& e) {
    return e.what();
  }
  FAIL("accepted: expected a FormatError");
  return "";
}

}  // namespace

// ---- safetensors: limits that keep the reader linear ----

TEST_CASE("limits: a safetensors header of kMaxTensors tensors is read quickly, one more is refused by name",
          "[limits][safetensors]") {
  const auto t0 = std::chrono::steady_clock::now();
  const io::SafetensorsFile f = io::parse_safetensors(with_length(header_of_empty_tensors(io::kMaxTensors)), "max");
  CHECK(f.tensors.size() == io::kMaxTensors);
  // 40,000 tensors took 15 s with the quadratic parse (200,000: minutes).
  CHECK(seconds_since(t0) < kHangSeconds);

  const std::string msg = format_error_of(with_length(header_of_empty_tensors(io::kMaxTensors + 1)));
  CHECK_THAT(msg, Contains("hostile.safetensors") && Contains("100001 tensors") && Contains("kMaxTensors"));
}

TEST_CASE("limits: a safetensors header too deep, with too many values or too long a name is refused by name",
          "[limits][safetensors]") {
  SECTION("nesting: kMaxHeaderDepth levels are read, one more is refused before parsing") {
    // The top-level object is level 1; the shape array level 3.
    auto nested = [](int levels) {
      return with_length(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"__metadata__":{"k":"v"},"x":)" +
                         std::string(static_cast<size_t>(levels - 1), '[') + std::string(static_cast<size_t>(levels - 1), ']') + "}");
    };
    // Depth kMaxHeaderDepth is within the limit (and then refused for what it is: not a tensor entry).
    CHECK_THAT(format_error_of(nested(io::kMaxHeaderDepth)), Contains("tensor 'x' needs dtype"));
    CHECK_THAT(format_error_of(nested(io::kMaxHeaderDepth + 1)), Contains("nested more than 16 levels") && Contains("kMaxHeaderDepth"));
  }
  SECTION("brackets and quotes inside strings are not nesting") {
    const std::string deep = std::string(10000, '[') + R"(\"{{{)" + std::string(10000, ']');
    const io::SafetensorsFile f = io::parse_safetensors(with_length(R"({"__metadata__":{"k":")" + deep + R"("}})"), "s");
    CHECK(f.metadata.at("k").size() == 20000 + 4);
  }
  SECTION("a header of millions of tiny values is refused before it is parsed") {
    std::string many = R"({"a":{"dtype":"F32","shape":[)";
    for (int i = 0; i < 2'000'001; ++i) many += "0,";
    many += R"(0],"data_offsets":[0,0]}})";
    CHECK_THAT(format_error_of(with_length(many)), Contains("values") && Contains("kMaxHeaderValues"));
  }
  SECTION("tensor names and metadata keys longer than kMaxNameBytes") {
    const std::string ok(io::kMaxNameBytes, 'n'), long_name(io::kMaxNameBytes + 1, 'n');
    CHECK(io::parse_safetensors(with_length(R"({")" + ok + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})"), "s")
              .tensors.count(ok) == 1);
    CHECK_THAT(format_error_of(with_length(R"({")" + long_name + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})")),
               Contains("tensor name of 1025 bytes") && Contains("kMaxNameBytes"));
    CHECK_THAT(format_error_of(with_length(R"({"__metadata__":{")" + long_name + R"(":"v"}})")),
               Contains("key of 1025 bytes") && Contains("kMaxNameBytes"));
  }
  SECTION("more than kMaxMetadataEntries metadata entries") {
    std::string meta = R"({"__metadata__":{)";
    for (size_t i = 0; i <= io::kMaxMetadataEntries; ++i) meta += (i ? ",\"k" : "\"k") + std::to_string(i) + R"(":"v")";
    CHECK_THAT(format_error_of(with_length(meta + "}}")), Contains("1025 entries") && Contains("kMaxMetadataEntries"));
  }
  SECTION("the writer refuses what the reader would refuse") {
    io::SafetensorsFile f;
    f.tensors[std::string(io::kMaxNameBytes + 1, 'n')] = zeros({1});
    REQUIRE_THROWS_WITH(io::serialize_safetensors(f), Contains("kMaxNameBytes"));
    io::SafetensorsFile g;
    g.metadata[std::string(io::kMaxNameBytes + 1, 'k')] = "v";
    REQUIRE_THROWS_WITH(io::serialize_safetensors(g), Contains("kMaxNameBytes"));
  }
}

TEST_CASE("limits: a safetensors shape with a zero and huge dimensions is a FormatError, not an overflow",
          "[limits][safetensors]") {
  // No bytes are needed, but the strides of (0, 2^40, 2^40) do not fit in
  // int64, and 2^64 - 1 does not fit in a dimension at all.
  CHECK_THAT(format_error_of(with_length(R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})")),
             Contains("tensor 'a' shape") && Contains("too large"));
  CHECK_THAT(format_error_of(with_length(R"({"a":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}})")),
             Contains("too large"));
  // A zero-size tensor with modest dimensions is fine.
  const auto f = io::parse_safetensors(with_length(R"({"a":{"dtype":"F32","shape":[0,3,4],"data_offsets":[0,0]}})"), "z");
  CHECK(f.tensors.at("a").shape() == Shape({0, 3, 4}));
}

// ---- Module: lookups by name in O(1) ----

TEST_CASE("limits: a Sequential of 100,000 children builds, and finds each child, in linear time", "[limits][nn]") {
  const auto t0 = std::chrono::steady_clock::now();
  nn::Sequential s;
  const int n = 100'000;
  for (int i = 0; i < n; ++i) s.push_back(nn::ReLU());
  // A linear search per registration (and per lookup) took 35 s for 80,000.
  for (int i = 0; i < n; i += 7) REQUIRE(s.find_slot(std::to_string(i))->name == std::to_string(i));
  CHECK(&s.get_submodule(std::to_string(n - 1)) == &s[static_cast<size_t>(n - 1)]);
  CHECK(seconds_since(t0) < kHangSeconds);
  CHECK(s.find_slot("100000") == nullptr);
  CHECK(s.find_slot("") == nullptr);
  REQUIRE_THROWS_WITH(s.push_back("99", nn::ReLU()), Contains("child '99' registered twice"));
  // Replacing the module in a slot keeps it findable.
  s.replace_module("5", std::make_shared<nn::Flatten>());
  CHECK(s.find_slot("5")->module->type_name() == "Flatten");
}

TEST_CASE("limits: a model file whose Sequential has 100,000 children loads in linear time", "[limits][nn][model_file]") {
  nn::Sequential s;
  for (int i = 0; i < 100'000; ++i) s.push_back(nn::ReLU());
  const std::string bytes = io::serialize_safetensors(io::model_to_safetensors(s));
  const auto t0 = std::chrono::steady_clock::now();
  // 80,000 children took 35 s to load when each registration searched the children.
  const auto model = io::build_model(io::parse_safetensors(bytes, "wide.safetensors"), "wide.safetensors");
  CHECK(seconds_since(t0) < kHangSeconds);
  CHECK(model->children().size() == 100'000);
  CHECK(model->find_slot("99999"));
}

TEST_CASE("limits: a model file of 50,000 layers (kMaxTensors tensors) loads, and loads into a model, in linear time",
          "[limits][nn][model_file]") {
  // Each module's tensors were found by a pass over all the file's tensors,
  // and each child of the file was looked for among all the model's:
  // quadratic, 5e9 steps for this file. Now the tensors are grouped by
  // module once.
  nn::Sequential s;
  const int n = 50'000;
  for (int i = 0; i < n; ++i) s.push_back(nn::Linear(1, 1));
  const io::SafetensorsFile file = io::model_to_safetensors(s);
  REQUIRE(file.tensors.size() == io::kMaxTensors);
  const auto t0 = std::chrono::steady_clock::now();
  const auto model = io::build_model(file, "layers.safetensors");
  CHECK(model->children().size() == static_cast<size_t>(n));
  nn::Sequential target;
  for (int i = 0; i < n; ++i) target.push_back(nn::Linear(1, 1));
  io::load_into(target, file, "layers.safetensors");
  CHECK(seconds_since(t0) < kHangSeconds);
  const std::string last = std::to_string(n - 1);
  CHECK(target.get_submodule(last).named_parameters().at(0).second.item() ==
        s.get_submodule(last).named_parameters().at(0).second.item());
}

namespace {
// A model description (the "tinyqat" metadata) of `children` ReLUs in one Sequential.
std::string wide_description(size_t children) {
  std::string d = R"({"format":"tinyqat-model","version":2,"model":{"type":"Sequential","config":{},"children":[)";
  for (size_t i = 0; i < children; ++i) {
    if (i) d += ',';
    d += R"({"name":")" + std::to_string(i) + R"(","module":{"type":"ReLU","config":{},"children":[]}})";
  }
  return d + "]}}";
}
io::SafetensorsFile with_description(const std::string& d) {
  io::SafetensorsFile f;
  f.metadata["tinyqat"] = d;
  return f;
}
}  // namespace

TEST_CASE("limits: a model description beyond its module count or nesting is refused by name", "[limits][model_file]") {
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(io::build_model(with_description(wide_description(io::kMaxModules)), "m.safetensors"),
                      Contains("m.safetensors: the model has more than 200000 modules (the limit kMaxModules)"));
  CHECK(seconds_since(t0) < kHangSeconds);
  CHECK_NOTHROW(io::build_model(with_description(wide_description(3)), "m.safetensors"));
  // JSON nested 100,000 levels inside the description: refused before it is parsed (the header's own
  // depth limit does not see into a metadata string).
  const std::string deep = R"({"format":"tinyqat-model","version":2,"model":)" + std::string(100'000, '[') +
                           std::string(100'000, ']') + "}";
  REQUIRE_THROWS_WITH(io::build_model(with_description(deep), "m.safetensors"),
                      Contains("m.safetensors: the model description is nested more than 256 levels deep"));
  // Modules nested more than kMaxModuleDepth deep.
  std::string nested = R"({"type":"ReLU","config":{},"children":[]})";
  for (int i = 0; i < io::kMaxModuleDepth + 1; ++i)
    nested = R"({"type":"Sequential","config":{},"children":[{"name":"s","module":)" + nested + "}]}";
  REQUIRE_THROWS_WITH(io::build_model(with_description(R"({"format":"tinyqat-model","version":2,"model":)" + nested + "}"),
                                      "m.safetensors"),
                      Contains("module tree is nested too deeply") && Contains("kMaxModuleDepth"));
  // Two children of one name: the second silently replaced the first.
  std::string twice = wide_description(2);
  twice.replace(twice.find(R"("name":"1")"), 10, R"("name":"0")");
  REQUIRE_THROWS_WITH(io::build_model(with_description(twice), "m.safetensors"),
                      Contains("m.safetensors: module '' has two children named '0'"));
}

namespace {
// A module that fills its slots directly, as a subclass may.
struct DirectSlots : nn::Module {
  DirectSlots() {
    slots_.push_back(std::make_shared<nn::ModuleSlot>(nn::ModuleSlot{"a", std::make_shared<nn::ReLU>()}));
    register_module("b", nn::ReLU());
  }
};
}  // namespace

TEST_CASE("limits: a child put into slots_ without register_slot is still found", "[limits][nn]") {
  DirectSlots m;
  REQUIRE(m.find_slot("a"));
  CHECK(m.find_slot("a")->name == "a");
  CHECK(m.find_slot("b")->name == "b");
  CHECK(m.find_slot("c") == nullptr);
}

// ---- Sizes: checked element and byte counts ----

TEST_CASE("limits: element and byte counts that overflow int64 are errors naming the shape", "[limits][tensor]") {
  const int64_t big = int64_t{1} << 32;
  // Was 0 (wrapped), so zeros() returned 0-byte storage for 2^64 elements.
  REQUIRE_THROWS_AS(Shape({big, big}).numel(), std::invalid_argument);
  REQUIRE_THROWS_WITH(Shape({big, big}).numel(), Contains("(4294967296, 4294967296)") && Contains("64-bit"));
  REQUIRE_THROWS_AS(zeros({big, big}), std::invalid_argument);
  REQUIRE_THROWS_WITH(empty({0, big, big}, DType::u8), Contains("strides"));  // 0 elements, but strides overflow
  // Elements fit, bytes do not: 2^61 f32 elements are 2^63 bytes.
  REQUIRE_THROWS_WITH(storage_bytes(Shape({int64_t{1} << 61}), DType::f32), Contains("too large") && Contains("bytes"));
  CHECK(storage_bytes(Shape({int64_t{1} << 60}), DType::f32) == size_t{1} << 62);
  // A zero dimension makes the count 0, however large the others.
  CHECK(Shape({big, big, 0}).numel() == 0);
  CHECK(zeros({big, big, 0}).numel() == 0);
  CHECK(Shape({big / 2, big - 1}).numel() == (big / 2) * (big - 1));  // 2^63 - 2^31: fits
  REQUIRE_THROWS_WITH(empty({2, -1}), Contains("negative dimension"));
}

TEST_CASE("limits: creating tensors from empty vectors or null pointers copies nothing", "[limits][tensor]") {
  // memcpy from the null data() of an empty vector is undefined behaviour,
  // even for 0 bytes (UBSan reports it in the sanitizer build).
  CHECK(from_vector({}, {0}).numel() == 0);
  CHECK(from_vector_i64({}, {2, 0}).numel() == 0);
  CHECK(from_bytes(nullptr, DType::u8, {0, 5}).numel() == 0);
}

// ---- Values that must be finite or in range ----

TEST_CASE("limits: quantization parameters refuse a non-finite scale and an empty integer range",
          "[limits][quant]") {
  const quant::QuantSpec act = quant::activation_spec(8);
  // max - min overflows float32: the scale was inf and every value quantized to the zero point.
  REQUIRE_THROWS_WITH(quant::calculate_qparams(-3.4e38f, 3.4e38f, act),
                      Contains("calculate_qparams") && Contains("too wide") && Contains("[-3.4e+38, 3.4e+38]"));
  // Symmetric: the half range fits, so the scale is finite and accepted.
  const auto sym = quant::calculate_qparams(-3.4e38f, 3.4e38f, quant::weight_spec(8));
  CHECK(std::isfinite(sym.scale));

  quant::MinMaxObserver obs(act);
  obs.forward(from_vector({-3.4e38f, 3.4e38f}, {2}));
  REQUIRE_THROWS_WITH(obs.calculate_qparams(), Contains("too wide"));

  // quant_min > quant_max (a spec that skipped validate) and quant_min == quant_max.
  quant::QuantSpec upside_down = act;
  upside_down.quant_min = 10;
  upside_down.quant_max = 5;
  REQUIRE_THROWS_WITH(quant::calculate_qparams(-1, 1, upside_down), Contains("quant_min (10) must be less than quant_max (5)"));
  upside_down.quant_max = 10;
  REQUIRE_THROWS_WITH(quant::calculate_qparams(-1, 1, upside_down), Contains("quant_min (10) must be less than quant_max (10)"));
  // Ordinary ranges are unchanged.
  const auto sz = quant::calculate_qparams(-1.f, 3.f, act);
  CHECK(sz.scale == 4.f / 255.f);
}

TEST_CASE("limits: SGD refuses settings that are NaN, infinite or out of range, also when changed later",
          "[limits][sgd]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  Tensor w = ones({2}).requires_grad_();
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .momentum = 0.9, .dampening = nan}), Contains("SGD: invalid dampening nan"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .momentum = 0.9, .dampening = 1.5}), Contains("invalid dampening 1.5"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = inf}), Contains("invalid learning rate inf"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = nan}), Contains("invalid learning rate nan"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .momentum = nan}), Contains("invalid momentum nan"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .momentum = 2}), Contains("invalid momentum 2"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .weight_decay = inf}), Contains("invalid weight_decay inf"));
  REQUIRE_THROWS_WITH(nn::SGD({w}, {.lr = 0.1, .weight_decay = -1}), Contains("invalid weight_decay -1"));

  nn::SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
  opt.options().dampening = nan;  // options() is writable
  sum(w).backward();
  REQUIRE_THROWS_WITH(opt.step(), Contains("SGD.step: invalid dampening nan"));
  CHECK(to_vector(w) == std::vector<float>{1, 1});  // nothing changed
}

TEST_CASE("limits: SGD momentum buffers restored from outside are checked", "[limits][sgd]") {
  Tensor w = ones({2}).requires_grad_();
  nn::SGD opt({w}, {.lr = 0.1, .momentum = 0.9});
  REQUIRE_THROWS_WITH(opt.set_momentum_buffers({from_vector({0, std::nanf("")}, {2})}),
                      Contains("buffer 0 holds nan at element 1") && Contains("finite"));
  REQUIRE_THROWS_WITH(opt.set_momentum_buffers({zeros({3})}), Contains("buffer 0 is f32 (3,), its parameter f32 (2,)"));
  REQUIRE_THROWS_WITH(opt.set_momentum_buffers({}), Contains("0 buffers for 1 parameters"));
  CHECK_FALSE(opt.momentum_buffers()[0].defined());  // unchanged
  opt.set_momentum_buffers({from_vector({1, 2}, {2})});
  CHECK(to_vector(opt.momentum_buffers()[0]) == std::vector<float>{1, 2});

  // A buffer of the wrong size put in through momentum_buffers() was read and
  // written out of bounds by step().
  opt.momentum_buffers()[0] = zeros({1});
  sum(w).backward();
  REQUIRE_THROWS_WITH(opt.step(), Contains("momentum buffer 0 is f32 (1,), its parameter f32 (2,)"));
}

TEST_CASE("limits: the random generator refuses a state it can never leave", "[limits][random]") {
  Generator g(3);
  const Generator::State good = g.state();
  // All-zero: every draw 0, and normal() looped forever looking for u > 0.
  REQUIRE_THROWS_WITH(g.set_state({{0, 0, 0, 0}, false, 0}), Contains("all-zero state"));
  REQUIRE_THROWS_WITH(g.set_state({{1, 2, 3, 4}, true, std::nan("")}), Contains("spare") && Contains("not finite"));
  CHECK(g.state().s[0] == good.s[0]);  // unchanged
  g.set_state({{1, 2, 3, 4}, true, 0.5});
  CHECK(g.normal() == 0.5);
  REQUIRE_THROWS_WITH(g.below(0), Contains("empty"));
}

TEST_CASE("limits: a weight about to be quantized must be finite, and the error names layer and element",
          "[limits][quant]") {
  Tensor w = zeros({3, 4});
  w.data<float>()[1 * 4 + 2] = std::nanf("");
  REQUIRE_THROWS_WITH(quant::require_finite(w, "fc1", "weight"),
                      Contains("fc1: weight[1, 2] is nan; an int8 layer needs finite weights"));
  w.data<float>()[1 * 4 + 2] = -std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(quant::require_finite(w, "fc1", "weight"), Contains("weight[1, 2] is -inf"));
  // Non-contiguous views are checked in their own index order.
  REQUIRE_THROWS_WITH(quant::require_finite(kernels::transpose(w, 0, 1), "fc1", "weight"), Contains("weight[2, 1]"));
  w.data<float>()[1 * 4 + 2] = 3;
  CHECK_NOTHROW(quant::require_finite(w, "fc1", "weight"));
  CHECK_NOTHROW(quant::require_finite(zeros({2}, DType::i8), "fc1", "weight"));
}

// ---- Readers found by probing ----

TEST_CASE("limits: packed 4-bit data for a shape whose count overflows is a FormatError", "[limits][packing]") {
  const Tensor packed = zeros({1}, DType::u8);
  // (n + 1) / 2 overflowed for n = INT64_MAX; a wrapped count matched nothing useful.
  REQUIRE_THROWS_AS(io::unpack_int4(packed, Shape({std::numeric_limits<int64_t>::max()}), "fc1.weight"), io::FormatError);
  REQUIRE_THROWS_WITH(io::unpack_int4(packed, Shape({int64_t{1} << 32, int64_t{1} << 32}), "fc1.weight"),
                      Contains("fc1.weight") && Contains("64-bit"));
  REQUIRE_THROWS_WITH(io::unpack_int4(packed, Shape({-1, -1}), "fc1.weight"), Contains("negative dimension"));
  CHECK(io::unpack_int4(packed, Shape({1}), "fc1.weight").numel() == 1);
}

TEST_CASE("limits: a data loader over zero samples is refused instead of dividing by zero", "[limits][data]") {
  REQUIRE_THROWS_WITH(io::DataLoader(zeros({0, 4}, DType::u8), zeros({0}, DType::u8)), Contains("no samples"));
}

TEST_CASE("limits: check_json_limits refuses a JSON text nested or sized beyond its limits, naming file and text",
          "[limits][safetensors]") {
  const std::string deep = std::string(300, '[') + std::string(300, ']');
  REQUIRE_THROWS_AS(io::check_json_limits(deep, "m.safetensors", "the model description", 256), io::FormatError);
  REQUIRE_THROWS_WITH(io::check_json_limits(deep, "m.safetensors", "the model description", 256),
                      Contains("m.safetensors: the model description is nested more than 256 levels deep"));
  CHECK_NOTHROW(io::check_json_limits(deep, "m.safetensors", "the model description", 300));
  REQUIRE_THROWS_WITH(io::check_json_limits("[1,2,3,4]", "c", "the state", 8, 3), Contains("the state holds about 5 values"));
  CHECK_NOTHROW(io::check_json_limits(R"({"a":"[[[[[[[[[[\"]]"})", "c", "the state", 1));
}

TEST_CASE("limits: the readers refuse a FIFO or a device instead of blocking or reading without end", "[limits][io]") {
  // Opening a FIFO for reading blocks until a writer comes: `eval --model FIFO` hung.
  const std::string fifo = "/tmp/tinyqat_limits_fifo_" + std::to_string(::getpid());
  ::unlink(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(io::load_safetensors(fifo), Contains(fifo + ": is not a regular file"));
  CHECK_THROWS_WITH(io::read_idx(fifo), Contains(fifo + ": not a regular file"));
  CHECK_THROWS_WITH(io::load_npy(fifo), Contains(fifo + ": is not a regular file"));
  ::unlink(fifo.c_str());
  // /dev/zero never ends (load_npy read it until memory ran out); /dev/null read as an empty file.
  CHECK_THROWS_WITH(io::load_npy("/dev/zero"), Contains("/dev/zero: is not a regular file"));
  CHECK_THROWS_WITH(io::load_safetensors("/dev/null"), Contains("/dev/null: is not a regular file"));
  CHECK_THROWS_WITH(io::read_idx("/dev/zero"), Contains("/dev/zero: not a regular file"));
}
