// Tests of the safetensors reader and writer (src/io/safetensors.h,
// docs/model_files.md §1): round trips of every dtype, the exact byte layout
// of a tiny file, reading by Python (tools/read_safetensors.py), every kind
// of corrupt input, and atomic writes that an interrupted or failed save
// cannot turn into a half file.
#include <catch2/catch.hpp>

#include "test_files.h"
#include <signal.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using json = nlohmann::json;
using tq::DType;
using tq::Shape;
using tq::Tensor;
using tq::io::FormatError;
using tq::io::SafetensorsFile;

// A scratch directory for this process, removed at exit.
const fs::path& scratch_dir() { return tq_test::scratch_dir("safetensors"); }

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Files in `dir` whose name starts with `prefix`: leftovers of a save.
std::vector<std::string> files_starting_with(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().filename().string());
  return out;
}

template <class T>
Tensor tensor_of(const std::vector<T>& values, const Shape& shape) {
  return tq::from_bytes(values.data(), tq::dtype_of<T>(), shape);
}

// Same dtype, shape and bytes (NaN payloads and -0.0 included).
bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || !(a.shape() == b.shape())) return false;
  const Tensor ca = tq::kernels::contiguous(a), cb = tq::kernels::contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(a.numel()) * tq::dtype_size(a.dtype())) == 0;
}

// A file of every dtype, with values at the edges of each range.
SafetensorsFile every_dtype_file() {
  SafetensorsFile f;
  const float inf = std::numeric_limits<float>::infinity();
  f.tensors["f32"] = tensor_of<float>({0.f, -0.f, 1.5f, -3.25e-38f, 1e-45f, 3.4028235e38f, inf, -inf,
                                       std::numeric_limits<float>::quiet_NaN(), 0.1f, -7.f, 42.f},
                                      {3, 4});
  f.tensors["i32"] = tensor_of<int32_t>({std::numeric_limits<int32_t>::min(), -1, 0, 1, std::numeric_limits<int32_t>::max(), 65536}, {2, 3});
  f.tensors["i8"] = tensor_of<int8_t>({-128, -1, 0, 1, 127}, {5});
  f.tensors["u8"] = tensor_of<uint8_t>({0, 1, 128, 254, 255, 7}, {1, 2, 3});
  f.tensors["i64"] = tensor_of<int64_t>({std::numeric_limits<int64_t>::min(), -1, 0, int64_t{1} << 40, std::numeric_limits<int64_t>::max()}, {5});
  f.tensors["scalar"] = tensor_of<float>({2.5f}, Shape{});           // 0-d
  f.tensors["empty"] = tq::zeros({0, 3});                             // no elements
  f.tensors["layer.0.weight"] = tq::randn({7, 5});                    // dotted name, odd size
  f.metadata["format"] = "test";
  f.metadata["quotes \" and \\ and unicode"] = "caf\xc3\xa9 \xe2\x9c\x93 {\"json\": [1, 2]}";
  f.metadata["empty"] = "";
  return f;
}

// Bytes of a safetensors file with the given header text (not padded) and data.
std::string file_with_header(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// parse_safetensors(bytes) must throw FormatError naming the file and `problem`.
void expect_format_error(const std::string& bytes, const std::string& problem) {
  CAPTURE(bytes.substr(0, 200), problem);
  REQUIRE_THROWS_MATCHES(tq::io::parse_safetensors(bytes, "broken.safetensors"), FormatError,
                         Catch::Matchers::Predicate<FormatError>(
                             [&](const FormatError& e) {
                               const std::string m = e.what();
                               return m.rfind("broken.safetensors: ", 0) == 0 && m.find(problem) != std::string::npos;
                             },
                             "message starts with the file name and says: " + problem));
}

}  // namespace

TEST_CASE("safetensors: every dtype and the metadata survive a write / read round trip", "[safetensors]") {
  const SafetensorsFile f = every_dtype_file();
  const fs::path path = scratch_dir() / "every_dtype.safetensors";
  tq::io::save_safetensors(path.string(), f);
  const SafetensorsFile g = tq::io::load_safetensors(path.string());

  REQUIRE(g.tensors.size() == f.tensors.size());
  for (auto& [name, t] : f.tensors) {
    INFO("tensor " << name);
    REQUIRE(g.tensors.count(name));
    CHECK(same_bytes(g.tensors.at(name), t));
  }
  CHECK(g.metadata == f.metadata);
  CHECK(g.tensors.at("scalar").dim() == 0);
  CHECK(g.tensors.at("empty").shape() == Shape{0, 3});

  // In memory and on disk alike; and parsing what serialize wrote gives it back.
  CHECK(read_bytes(path) == tq::io::serialize_safetensors(f));
  const SafetensorsFile h = tq::io::parse_safetensors(tq::io::serialize_safetensors(g), "again");
  CHECK(tq::io::serialize_safetensors(h) == tq::io::serialize_safetensors(f));
}

TEST_CASE("safetensors: a non-contiguous tensor is written in row-major order", "[safetensors]") {
  const Tensor m = tensor_of<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  SafetensorsFile f;
  f.tensors["t"] = tq::kernels::transpose(m, 0, 1);  // (3, 2): 1 4 2 5 3 6
  const SafetensorsFile g = tq::io::parse_safetensors(tq::io::serialize_safetensors(f), "mem");
  CHECK(g.tensors.at("t").shape() == Shape{3, 2});
  CHECK(tq::to_vector(g.tensors.at("t")) == std::vector<float>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("safetensors: the byte layout of a tiny file computed by hand", "[safetensors]") {
  SafetensorsFile f;
  f.tensors["a"] = tensor_of<float>({1.f, -2.f}, {2});
  f.tensors["b"] = tensor_of<int8_t>({-1, 0, 127}, {3});
  f.metadata["k"] = "v";

  // Keys sorted; "a" takes data bytes [0, 8), "b" [8, 11).
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]},)"
      R"("b":{"data_offsets":[8,11],"dtype":"I8","shape":[3]}})";
  REQUIRE(header.size() == 132);
  // 8 + 132 = 140; four spaces pad the header to 136 bytes, so the data area
  // starts at byte 144, a multiple of 8.
  std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + header + "    ";
  expected += std::string("\x00\x00\x80\x3f", 4);  // 1.0f, little-endian
  expected += std::string("\x00\x00\x00\xc0", 4);  // -2.0f
  expected += std::string("\xff\x00\x7f", 3);      // -1, 0, 127
  REQUIRE(expected.size() == 155);

  const std::string bytes = tq::io::serialize_safetensors(f);
  CHECK(bytes == expected);

  const fs::path path = scratch_dir() / "tiny.safetensors";
  tq::io::save_safetensors(path.string(), f);
  CHECK(read_bytes(path) == expected);
}

TEST_CASE("safetensors: files from other writers are read (no padding or key order or metadata)", "[safetensors]") {
  // As another library may write it: tensors not in name order, unpadded header.
  const std::string data = std::string("\x01\x02\x03", 3) + std::string("\x00\x00\x20\x41", 4);  // u8 1 2 3, f32 10
  const std::string bytes =
      file_with_header(R"({"z":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}, "a":{"dtype":"F32","shape":[1],"data_offsets":[3,7]}})", data);
  const SafetensorsFile f = tq::io::parse_safetensors(bytes, "other.safetensors");
  CHECK(f.metadata.empty());
  CHECK(tq::to_vector(f.tensors.at("z")) == std::vector<float>{1, 2, 3});
  CHECK(tq::to_vector(f.tensors.at("a")) == std::vector<float>{10});
  // An empty file of tensors is valid too.
  CHECK(tq::io::parse_safetensors(file_with_header("{}"), "empty").tensors.empty());
}

TEST_CASE("safetensors: python3 with numpy reads what C++ wrote (tools/read_safetensors.py)", "[safetensors][python]") {
  // The interpreter on PATH may lack numpy where the system one has it (pyenv).
  std::string python;
  for (const char* candidate : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(candidate) + " -c 'import numpy' >/dev/null 2>&1").c_str()) == 0) {
      python = candidate;
      break;
    }
  if (python.empty()) {
    WARN("skipped: no python3 with numpy (apt-get install python3-numpy)");
    return;
  }
  const std::string script = std::string(TINYQAT_GOLDEN_DIR) + "/../../tools/read_safetensors.py";
  REQUIRE(fs::exists(script));

  SafetensorsFile f = every_dtype_file();
  // JSON has no NaN or infinity: keep the f32 values finite for this test.
  f.tensors["f32"] = tensor_of<float>({0.f, -0.f, 1.5f, -3.25e-38f, 1e-45f, 3.4028235e38f, 0.1f, -7.f}, {2, 4});
  const fs::path path = scratch_dir() / "for_python.safetensors";
  const fs::path out = scratch_dir() / "python.json";
  tq::io::save_safetensors(path.string(), f);
  const std::string cmd = python + " " + script + " " + path.string() + " --values > " + out.string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  const json j = json::parse(read_bytes(out));

  for (auto& [key, value] : f.metadata) CHECK(j["metadata"][key] == value);
  REQUIRE(j["tensors"].size() == f.tensors.size());
  const std::map<DType, std::string> names = {{DType::f32, "F32"}, {DType::i32, "I32"}, {DType::i8, "I8"},
                                              {DType::u8, "U8"},   {DType::i64, "I64"}};
  for (auto& [name, t] : f.tensors) {
    INFO("tensor " << name);
    const json& p = j["tensors"][name];
    CHECK(p["dtype"] == names.at(t.dtype()));
    CHECK(p["shape"].get<std::vector<int64_t>>() == t.shape().to_vector());
    const Tensor c = tq::kernels::contiguous(t);
    std::vector<json> expected;
    for (int64_t i = 0; i < t.numel(); ++i) {
      switch (t.dtype()) {
        case DType::f32: expected.emplace_back(static_cast<double>(c.data<float>()[i])); break;
        case DType::i32: expected.emplace_back(c.data<int32_t>()[i]); break;
        case DType::i8: expected.emplace_back(c.data<int8_t>()[i]); break;
        case DType::u8: expected.emplace_back(c.data<uint8_t>()[i]); break;
        case DType::i64: expected.emplace_back(c.data<int64_t>()[i]); break;
      }
    }
    // Exact: f32 -> float64 is exact, and JSON numbers round-trip.
    CHECK(p["values"] == json(expected));
  }
}

TEST_CASE("safetensors: truncated files are rejected at every length", "[safetensors][corrupt]") {
  SafetensorsFile f;
  f.tensors["w"] = tq::randn({3, 4});
  f.tensors["b"] = tensor_of<int8_t>({1, 2, 3}, {3});
  const std::string good = tq::io::serialize_safetensors(f);
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("first " << n << " of " << good.size() << " bytes");
    CHECK_THROWS_AS(tq::io::parse_safetensors(good.substr(0, n), "cut.safetensors"), FormatError);
  }
  expect_format_error(good.substr(0, 5), "too short");
  expect_format_error(good.substr(0, 40), "larger than the file");
  expect_format_error(good.substr(0, good.size() - 1), "outside the data area");

  // From disk, the message names the path.
  const fs::path path = scratch_dir() / "truncated.safetensors";
  write_bytes(path, good.substr(0, good.size() - 5));
  REQUIRE_THROWS_AS(tq::io::load_safetensors(path.string()), FormatError);
  REQUIRE_THROWS_WITH(tq::io::load_safetensors(path.string()), Contains(path.string()) && Contains("outside the data area"));
}

TEST_CASE("safetensors: corrupt headers are rejected with a message naming the file and the problem",
          "[safetensors][corrupt]") {
  const std::string f32x2(8, '\0');  // two f32 zeros
  SECTION("header length over the cap") {
    std::string b = file_with_header("{}");
    const uint64_t n = uint64_t{1} << 40;
    for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    expect_format_error(b, "exceeds the limit");
    std::memset(b.data(), 0xff, 8);  // 2^64 - 1: must not wrap around
    expect_format_error(b, "exceeds the limit");
  }
  SECTION("header length larger than the file") {
    std::string b = file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f32x2);
    b[0] = static_cast<char>(200);
    expect_format_error(b, "larger than the file");
  }
  SECTION("invalid JSON") {
    expect_format_error(file_with_header(R"({"a": {"dtype": "F32",)"), "not valid JSON");
    expect_format_error(file_with_header(std::string("{\"a\0\": 1}", 9)), "not valid JSON");
    expect_format_error(file_with_header(""), "not valid JSON");
  }
  SECTION("header that is JSON but not an object") {
    expect_format_error(file_with_header("[1, 2]"), "not a JSON object");
    expect_format_error(file_with_header(R"({"a": 5})"), "needs dtype, shape and data_offsets");
    expect_format_error(file_with_header(R"({"a": {"dtype": "F32", "shape": [2]}})"), "needs dtype, shape and data_offsets");
    expect_format_error(file_with_header(R"({"__metadata__": [1]})"), "__metadata__ is not an object");
    expect_format_error(file_with_header(R"({"__metadata__": {"k": 1}})"), "'k' is not a string");
  }
  SECTION("nesting deep enough to exhaust the stack") {
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,0]}})"), "nested");
    expect_format_error(file_with_header(R"({"a":{"dtype":)" + deep + R"(,"shape":[],"data_offsets":[0,0]}})"), "nested");
  }
  SECTION("offsets outside the data area") {
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"),
                        "data_offsets [0, 8] lie outside the data area of 4 bytes");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", f32x2), "outside the data area");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,8]}})", f32x2),
                        "outside the data area");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", f32x2), "invalid data_offsets");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", f32x2), "invalid data_offsets");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}})", f32x2), "invalid data_offsets");
  }
  SECTION("overlapping tensors") {
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                         f32x2),
                        "overlap");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                         f32x2),
                        "overlap");
  }
  SECTION("dtype x shape does not match the byte count") {
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2),
                        "has 8 bytes but dtype F32 x shape (3,) needs 12");
    expect_format_error(file_with_header(R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}})", f32x2), "needs 16");
    expect_format_error(file_with_header(R"({"a":{"dtype":"U8","shape":[],"data_offsets":[0,8]}})", f32x2), "needs 1");
    // A shape whose element count overflows 64 bits.
    expect_format_error(
        file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", f32x2),
        "too large");
  }
  SECTION("unknown dtype") {
    expect_format_error(file_with_header(R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", f32x2),
                        "tensor 'a' has an unsupported dtype \"F16\"");
    expect_format_error(file_with_header(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", f32x2), "unsupported dtype");
    expect_format_error(file_with_header(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", f32x2), "unsupported dtype 7");
  }
  SECTION("negative, fractional or non-numeric shape") {
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2),
                        "tensor 'a' has a non-integer or negative dimension in [-2]");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", f32x2), "non-integer");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", f32x2), "non-integer");
    expect_format_error(file_with_header(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", f32x2), "invalid shape");
    expect_format_error(file_with_header(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,8],"data_offsets":[0,8]}})", f32x2),
                        "invalid shape");
  }
}

TEST_CASE("safetensors: no byte flip in the header crashes the reader", "[safetensors][corrupt]") {
  SafetensorsFile f;
  f.tensors["weight"] = tq::randn({4, 3});
  f.tensors["bias"] = tensor_of<int32_t>({1, -2, 3, -4}, {4});
  f.metadata["tinyqat"] = R"({"format":"tinyqat-model"})";
  const std::string good = tq::io::serialize_safetensors(f);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | static_cast<unsigned char>(good[static_cast<size_t>(i)]);
  const size_t header_end = 8 + static_cast<size_t>(header_bytes);
  int rejected = 0, accepted = 0;
  for (size_t i = 0; i < header_end; ++i)
    for (unsigned char v : {0x00, 0x01, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x5b, 0x5d, 0x7b, 0x7d, 0x80, 0xff}) {
      std::string b = good;
      b[i] = static_cast<char>(v);
      try {
        const SafetensorsFile g = tq::io::parse_safetensors(b, "flipped");
        for (auto& [name, t] : g.tensors) CHECK(t.numel() * static_cast<int64_t>(tq::dtype_size(t.dtype())) <= static_cast<int64_t>(b.size()));
        ++accepted;
      } catch (const FormatError& e) {
        CHECK_THAT(e.what(), Catch::Matchers::StartsWith("flipped: "));
        ++rejected;
      }
    }
  CHECK(rejected > 0);
  CHECK(accepted > 0);  // e.g. a changed digit of the metadata
}

TEST_CASE("safetensors: a tensor may not be named __metadata__", "[safetensors]") {
  SafetensorsFile f;
  f.tensors["__metadata__"] = tq::zeros({1});
  CHECK_THROWS_AS(tq::io::serialize_safetensors(f), std::invalid_argument);
}

TEST_CASE("safetensors: files that cannot be read name the path", "[safetensors]") {
  const std::string missing = (scratch_dir() / "does_not_exist.safetensors").string();
  CHECK_THROWS_WITH(tq::io::load_safetensors(missing), Contains(missing) && Contains("cannot open"));
  const std::string dir = scratch_dir().string();
  CHECK_THROWS_WITH(tq::io::load_safetensors(dir), Contains(dir) && Contains("directory"));
}

// ---- Atomic writes ----

TEST_CASE("write_file_atomically replaces a file whole and leaves no temporary file", "[safetensors][atomic]") {
  const fs::path dir = scratch_dir() / "atomic_replace";
  fs::create_directories(dir);
  const fs::path path = dir / "model.safetensors";
  write_bytes(path, "old contents");
  tq::io::write_file_atomically(path.string(), "new contents");
  CHECK(read_bytes(path) == "new contents");
  CHECK(files_starting_with(dir, "model.safetensors") == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("write_file_atomically: a failed save leaves the existing file as it was", "[safetensors][atomic]") {
  const fs::path dir = scratch_dir() / "atomic_fail";
  fs::create_directories(dir);
  const std::string old = "the previous model, which must survive";

  SECTION("the path is a directory") {
    const fs::path path = dir / "a_directory";
    fs::create_directories(path / "inside");
    CHECK_THROWS_WITH(tq::io::write_file_atomically(path.string(), "x"), Contains(path.string()));
    CHECK(fs::is_directory(path / "inside"));
    CHECK(files_starting_with(dir, "a_directory") == std::vector<std::string>{"a_directory"});
  }
  SECTION("the directory does not exist") {
    const fs::path path = dir / "no_such_dir" / "model.safetensors";
    CHECK_THROWS_WITH(tq::io::write_file_atomically(path.string(), "x"), Contains(path.string()) && Contains("cannot write"));
    CHECK_FALSE(fs::exists(path.parent_path()));
  }
  SECTION("the temporary file cannot be created") {
    const fs::path path = dir / "blocked.safetensors";
    write_bytes(path, old);
    // Occupy the temporary name this process would use.
    fs::create_directories(path.string() + ".tmp-" + std::to_string(getpid()));
    CHECK_THROWS_WITH(tq::io::write_file_atomically(path.string(), "new"), Contains(path.string()));
    CHECK(read_bytes(path) == old);
    fs::remove(path.string() + ".tmp-" + std::to_string(getpid()));
  }
  SECTION("the disk fills up in the middle of the write") {
    // A child process with a 64 KiB file size limit stands for a full disk:
    // write() fails with EFBIG part way through a 1 MiB file.
    const fs::path path = dir / "full.safetensors";
    write_bytes(path, old);
    const std::string big(1 << 20, 'x');
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      signal(SIGXFSZ, SIG_IGN);
      struct rlimit limit = {64 << 10, 64 << 10};
      setrlimit(RLIMIT_FSIZE, &limit);
      int code = 3;
      try {
        tq::io::write_file_atomically(path.string(), big);
        code = 0;  // the limit did not bite: the test cannot tell anything
      } catch (const std::runtime_error& e) {
        code = std::string(e.what()).find("write failed") != std::string::npos ? 1 : 2;
      }
      _exit(code);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);  // the save threw "write failed"
    CHECK(read_bytes(path) == old);
    CHECK(files_starting_with(dir, "full.safetensors") == std::vector<std::string>{"full.safetensors"});
  }
}

TEST_CASE("write_file_atomically: a writer killed mid-write never leaves a half file", "[safetensors][atomic]") {
  const fs::path dir = scratch_dir() / "atomic_kill";
  fs::create_directories(dir);
  const fs::path path = dir / "model.safetensors";
  const std::string old = "the previous model, which must survive";
  const std::string big(8 << 20, 'n');  // allocated before fork: the child only writes

  SECTION("killed while blocked inside write()") {
    write_bytes(path, old);
    int go[2];
    REQUIRE(pipe(go) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      char c;
      if (read(go[0], &c, 1) != 1) _exit(9);
      try {
        tq::io::write_file_atomically(path.string(), big);
      } catch (...) {
      }
      _exit(0);
    }
    // The child's temporary file is made a FIFO: its write() blocks once the
    // pipe is full, so the kill below lands mid-write, every time.
    const std::string tmp = path.string() + ".tmp-" + std::to_string(child);
    REQUIRE(mkfifo(tmp.c_str(), 0600) == 0);
    REQUIRE(write(go[1], "g", 1) == 1);
    // Read 4 KiB of what the child writes (non-blocking, so a child that never
    // writes fails the test instead of hanging it).
    const int fifo = open(tmp.c_str(), O_RDONLY | O_NONBLOCK);
    REQUIRE(fifo >= 0);
    size_t got = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    char some[4096];
    while (got < sizeof some && std::chrono::steady_clock::now() < deadline) {
      const ssize_t r = read(fifo, some, sizeof some - got);
      if (r > 0) got += static_cast<size_t>(r);
      else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    kill(child, SIGKILL);
    CHECK(got == sizeof some);  // the child was inside write() when it was killed
    close(fifo);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));
    CHECK(read_bytes(path) == old);
    close(go[0]);
    close(go[1]);
    // The next save to the same path clears what the killed save left behind,
    // but not the temporary of a process that is alive (pid 1 always is).
    CHECK(fs::exists(fs::symlink_status(tmp)));
    const std::string live = path.string() + ".tmp-1";
    write_bytes(live, "another save in progress");
    tq::io::write_file_atomically(path.string(), "newer");
    CHECK(read_bytes(path) == "newer");
    CHECK_FALSE(fs::exists(fs::symlink_status(tmp)));
    CHECK(read_bytes(live) == "another save in progress");
    fs::remove(live);
  }
  SECTION("killed at a random moment: the file is the old one or the whole new one") {
    for (int round = 0; round < 4; ++round) {
      write_bytes(path, old);
      const pid_t child = fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        tq::io::write_file_atomically(path.string(), big);
        _exit(0);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500 + 3000 * round));
      kill(child, SIGKILL);
      REQUIRE(waitpid(child, nullptr, 0) == child);
      const std::string now = read_bytes(path);
      CHECK((now == old || now == big));
      for (auto& leftover : files_starting_with(dir, "model.safetensors.tmp-")) fs::remove(dir / leftover);
    }
  }
}
