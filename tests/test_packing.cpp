// Packed 4-bit weights: round trips for every bit width that packs, and
// clear errors for data that does not match its shape.
#include <catch2/catch.hpp>

#include <filesystem>

#include "io/packing.h"
#include "io/safetensors.h"
#include "tensor/random.h"

using namespace tq;

TEST_CASE("pack_int4 / unpack_int4 round-trip every 2-, 3- and 4-bit range, odd and even counts", "[packing]") {
  Generator g(5);
  for (int bits = 2; bits <= 4; ++bits) {
    const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (int64_t n : {1, 2, 7, 64, 255}) {
      Tensor v = empty({n}, DType::i8);
      for (int64_t i = 0; i < n; ++i) v.data<int8_t>()[i] = static_cast<int8_t>(lo + static_cast<int>(g.below(hi - lo + 1)));
      const Tensor p = io::pack_int4(v);
      REQUIRE(p.numel() == (n + 1) / 2);
      const Tensor back = io::unpack_int4(p, {n}, "test");
      for (int64_t i = 0; i < n; ++i) REQUIRE(back.data<int8_t>()[i] == v.data<int8_t>()[i]);
    }
  }
}

TEST_CASE("pack_int4 lays out values low nibble first, two's complement", "[packing]") {
  Tensor v = empty({3}, DType::i8);
  v.data<int8_t>()[0] = -1;  // 0xF
  v.data<int8_t>()[1] = 2;   // 0x2
  v.data<int8_t>()[2] = -8;  // 0x8
  const Tensor p = io::pack_int4(v);
  REQUIRE(p.data<uint8_t>()[0] == 0x2F);
  REQUIRE(p.data<uint8_t>()[1] == 0x08);
}

TEST_CASE("bad input: values beyond 4 bits, and packed data that does not match its shape", "[packing]") {
  Tensor v = full({2}, 9, DType::i8);
  REQUIRE_THROWS_WITH(io::pack_int4(v), Catch::Contains("does not fit 4 bits"));
  Tensor p = zeros({3}, DType::u8);
  REQUIRE_THROWS_AS(io::unpack_int4(p, {2, 4}, "fc1.weight"), io::FormatError);
  REQUIRE_THROWS_WITH(io::unpack_int4(p, {2, 4}, "fc1.weight"), Catch::Contains("fc1.weight") && Catch::Contains("(2, 4)"));
  Tensor odd = full({2}, 0xF0, DType::u8);
  REQUIRE_THROWS_WITH(io::unpack_int4(odd, {3}, "w"), Catch::Contains("unused last half byte"));
}

#include "io/model_file.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/sequential.h"
#include "nn/sgd.h"
#include "quant/quant.h"
#include "tensor/ops.h"

TEST_CASE("a 4-bit model is stored packed and loads back predicting identically", "[packing][modelfile]") {
  manual_seed(3);
  nn::Sequential model;
  model.push_back("fc1", nn::Linear(12, 16));
  model.push_back("relu1", nn::ReLU());
  model.push_back("fc2", nn::Linear(16, 3));
  Generator g(9);
  const Tensor x = randn({64, 12}, g);
  const Tensor y = randint(0, 3, {64}, g);
  model.qconfig = quant::make_qat_qconfig(4, 4);
  quant::prepare_qat(model);
  nn::SGD opt(model.parameters(), {.lr = 0.05, .momentum = 0.9});
  for (int step = 0; step < 20; ++step) {
    opt.zero_grad();
    cross_entropy(model(x), y).backward();
    opt.step();
  }
  quant::convert(model);
  const Tensor before = kernels::to_float(model(x));
  const std::string path = (std::filesystem::temp_directory_path() / "tinyqat_w4a4.safetensors").string();
  io::save_model(model, path);
  const io::SafetensorsFile file = io::load_safetensors(path);
  REQUIRE(file.tensors.at("fc1.weight").dtype() == DType::u8);     // packed
  REQUIRE(file.tensors.at("fc1.weight").numel() == 16 * 12 / 2);  // two values a byte
  auto loaded = io::load_model(path);
  const Tensor after = kernels::to_float((*loaded)(x));
  REQUIRE(after.shape() == before.shape());
  for (int64_t i = 0; i < before.numel(); ++i) REQUIRE(after.data<float>()[i] == before.data<float>()[i]);
}
