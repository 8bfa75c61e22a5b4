// Tests of dataset loading and the DataLoader (src/io/dataset.h,
// src/io/data_loader.h, docs/data.md §3-4): epochs see every sample once,
// batching, seeded shuffling, exact resume from a saved state, normalisation.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "io/data_loader.h"
#include "io/dataset.h"
#include "io/idx.h"
#include "tensor/ops.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using tq::io::Batch;
using tq::io::DataLoader;
using tq::io::DataLoaderOptions;
using tq::io::Dataset;

constexpr double kStatsTolerance = 5e-5;       // the constants are rounded to 4 decimals
constexpr double kNormalisedTolerance = 1e-6;  // f32 rounding of the normalised pixel

// The packaged dataset, or a failed test that says how to install it (CI does).
Dataset fashion_test_set() {
  if (!fs::exists(tq::io::kFashionMnistDir))
    FAIL("Fashion-MNIST not found at " << tq::io::kFashionMnistDir
                                       << ": install the Debian package dataset-fashion-mnist "
                                          "(apt-get install dataset-fashion-mnist) or run scripts/setup.sh");
  return tq::io::load_fashion_mnist(tq::io::kFashionMnistDir, tq::io::Split::test);
}

fs::path scratch_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("tinyqat_test_data_" + std::to_string(getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

struct ScratchCleanup {
  ~ScratchCleanup() {
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("tinyqat_test_data_" + std::to_string(getpid())), ec);
  }
} scratch_cleanup;

// n samples of 2 pixels that spell out their own index (low byte, high byte),
// with label index % 10: a batch tells exactly which samples it holds.
Dataset indexed_dataset(int64_t n) {
  Dataset d;
  d.images = tq::empty({n, 1, 2}, tq::DType::u8);
  d.labels = tq::empty({n}, tq::DType::u8);
  for (int64_t i = 0; i < n; ++i) {
    d.images.data<uint8_t>()[2 * i] = static_cast<uint8_t>(i & 0xFF);
    d.images.data<uint8_t>()[2 * i + 1] = static_cast<uint8_t>(i >> 8);
    d.labels.data<uint8_t>()[i] = static_cast<uint8_t>(i % 10);
  }
  return d;
}

int pixel_of(float normalised, const DataLoaderOptions& o) {
  return static_cast<int>(std::lround((normalised * o.std + o.mean) * 255.0));
}

// The sample indices of a batch of an indexed_dataset, decoded from its pixels.
std::vector<int64_t> sample_ids(const Batch& b, const DataLoaderOptions& o) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < b.size(); ++i) {
    const float* x = b.images.data<float>() + 2 * i;
    const int64_t id = pixel_of(x[0], o) + 256 * pixel_of(x[1], o);
    REQUIRE(b.labels.data<int64_t>()[i] == id % 10);
    ids.push_back(id);
  }
  return ids;
}

// The next `count` batches of the loader, as sample indices.
std::vector<std::vector<int64_t>> take(DataLoader& loader, int count) {
  std::vector<std::vector<int64_t>> out;
  Batch b;
  for (int i = 0; i < count; ++i) {
    if (!loader.next(b)) {
      out.push_back({});  // marks an epoch boundary
      continue;
    }
    out.push_back(sample_ids(b, loader.options()));
  }
  return out;
}

// One full epoch's sample order.
std::vector<int64_t> epoch_order(DataLoader& loader) {
  std::vector<int64_t> order;
  for (const Batch& b : loader)
    for (int64_t id : sample_ids(b, loader.options())) order.push_back(id);
  return order;
}

}  // namespace

TEST_CASE("Fashion-MNIST: the test split loads with its known facts", "[data]") {
  const Dataset d = fashion_test_set();
  REQUIRE(d.size() == 10000);
  REQUIRE(d.images.dtype() == tq::DType::u8);
  REQUIRE(d.images.shape() == tq::Shape{10000, 28, 28});
  REQUIRE(d.labels.dtype() == tq::DType::u8);
  CHECK(d.labels.data<uint8_t>()[0] == 9);
  CHECK(d.images.data<uint8_t>()[14 * 28 + 12] == 98);
  std::vector<int> per_class(10, 0);
  for (int64_t i = 0; i < d.size(); ++i) per_class[d.labels.data<uint8_t>()[i]]++;
  for (int c = 0; c < 10; ++c) CHECK(per_class[c] == 1000);  // the test set is balanced

  const Dataset s = d.slice(100, 164);
  REQUIRE(s.size() == 64);
  CHECK(s.images.data<uint8_t>()[0] == d.images.data<uint8_t>()[100 * 784]);
  CHECK(s.labels.data<uint8_t>()[0] == d.labels.data<uint8_t>()[100]);
  REQUIRE_THROWS_WITH(d.slice(5, 10001), Contains("[5, 10001)"));
}

TEST_CASE("Fashion-MNIST: the train set's pixel mean and std are the loader's constants", "[data]") {
  if (!fs::exists(tq::io::kFashionMnistDir)) (void)fashion_test_set();  // fails with the install message
  const Dataset train = tq::io::load_fashion_mnist();
  REQUIRE(train.images.shape() == tq::Shape{60000, 28, 28});
  CHECK(train.labels.data<uint8_t>()[0] == 9);
  const tq::io::PixelStats s = tq::io::pixel_mean_std(train.images);
  CHECK(std::abs(s.mean - tq::io::kFashionMnistMean) < kStatsTolerance);
  CHECK(std::abs(s.std - tq::io::kFashionMnistStd) < kStatsTolerance);
}

TEST_CASE("Fashion-MNIST: missing data says how to install it", "[data]") {
  const std::string nowhere = (scratch_dir("empty") / "no-such-dir").string();
  REQUIRE_THROWS_WITH(tq::io::load_fashion_mnist(nowhere, tq::io::Split::train),
                      Contains(nowhere) && Contains("apt-get install dataset-fashion-mnist") && Contains("--data DIR"));
  const std::string empty = scratch_dir("empty").string();
  REQUIRE_THROWS_WITH(tq::io::load_fashion_mnist(empty, tq::io::Split::test),
                      Contains("neither t10k-images-idx3-ubyte.gz nor t10k-images-idx3-ubyte") &&
                          Contains("install the Debian package dataset-fashion-mnist"));
  REQUIRE(tq::io::parse_split("test") == tq::io::Split::test);
  REQUIRE_THROWS_WITH(tq::io::parse_split("validation"), Contains("unknown split 'validation'"));
}

TEST_CASE("Fashion-MNIST: uncompressed files are taken when the .gz ones are absent", "[data]") {
  const Dataset d = fashion_test_set().slice(0, 100);
  const fs::path dir = scratch_dir("plain");
  tq::io::write_idx((dir / "train-images-idx3-ubyte").string(), d.images);
  tq::io::write_idx((dir / "train-labels-idx1-ubyte").string(), d.labels);
  const Dataset back = tq::io::load_fashion_mnist(dir.string(), tq::io::Split::train);
  REQUIRE(back.images.shape() == tq::Shape{100, 28, 28});
  CHECK(std::equal(back.images.data<uint8_t>(), back.images.data<uint8_t>() + 100 * 784, d.images.data<uint8_t>()));
  CHECK(std::equal(back.labels.data<uint8_t>(), back.labels.data<uint8_t>() + 100, d.labels.data<uint8_t>()));
}

TEST_CASE("Fashion-MNIST: images and labels that disagree are rejected", "[data]") {
  const Dataset d = indexed_dataset(30);
  const fs::path dir = scratch_dir("disagree");
  const std::string images = (dir / "images.idx").string(), labels = (dir / "labels.idx.gz").string();
  tq::io::write_idx(images, tq::kernels::reshape(d.images, {30, 2, 1}));
  SECTION("counts") {
    tq::io::write_idx(labels, tq::kernels::slice(d.labels, 0, 0, 29));
    REQUIRE_THROWS_WITH(tq::io::load_idx_dataset(images, labels),
                        Contains(images + " holds 30 images but " + labels + " holds 29 labels"));
  }
  SECTION("a label out of range") {
    tq::Tensor bad = tq::kernels::clone(d.labels);
    bad.data<uint8_t>()[17] = 12;
    tq::io::write_idx(labels, bad);
    REQUIRE_THROWS_WITH(tq::io::load_idx_dataset(images, labels),
                        Contains(labels + ": label 12 at index 17 is not below the number of classes (10)"));
  }
  SECTION("labels that are images") {
    REQUIRE_THROWS_WITH(tq::io::load_idx_dataset(images, images), Contains("expected u8 labels (N)"));
  }
}

TEST_CASE("DataLoader: every sample exactly once per epoch, the last batch partial", "[data]") {
  const Dataset d = indexed_dataset(1000);
  DataLoaderOptions o;
  o.batch_size = 64;
  o.seed = 7;
  DataLoader loader(d, o);
  REQUIRE(loader.num_batches() == 16);  // 15 * 64 + 40
  for (int epoch = 0; epoch < 3; ++epoch) {
    CHECK(loader.epoch() == static_cast<uint64_t>(epoch));
    std::vector<int64_t> sizes;
    std::vector<int64_t> seen;
    for (const Batch& b : loader) {
      sizes.push_back(b.size());
      REQUIRE(b.images.shape() == tq::Shape{b.size(), 2});
      REQUIRE(b.images.dtype() == tq::DType::f32);
      REQUIRE(b.labels.dtype() == tq::DType::i64);
      for (int64_t id : sample_ids(b, o)) seen.push_back(id);
    }
    REQUIRE(sizes.size() == 16);
    CHECK(std::all_of(sizes.begin(), sizes.end() - 1, [](int64_t s) { return s == 64; }));
    CHECK(sizes.back() == 40);
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(1000);
    for (int64_t i = 0; i < 1000; ++i) all[i] = i;
    CHECK(seen == all);
  }

  o.drop_last = true;
  DataLoader dropping(d, o);
  REQUIRE(dropping.num_batches() == 15);
  std::set<int64_t> seen;
  for (const Batch& b : dropping) {
    CHECK(b.size() == 64);
    for (int64_t id : sample_ids(b, o)) seen.insert(id);
  }
  CHECK(seen.size() == 960);  // 40 samples sit out this epoch
}

TEST_CASE("DataLoader: the seed fixes the order, each epoch reshuffles", "[data]") {
  const Dataset d = indexed_dataset(500);
  DataLoaderOptions o;
  o.batch_size = 50;
  o.seed = 42;
  DataLoader a(d, o), b(d, o);
  const std::vector<int64_t> a0 = epoch_order(a), a1 = epoch_order(a);
  CHECK(a0 == epoch_order(b));
  CHECK(a1 == epoch_order(b));
  CHECK(a0 != a1);
  o.seed = 43;
  DataLoader c(d, o);
  CHECK(epoch_order(c) != a0);

  a.reset();
  CHECK(a.epoch() == 0);
  CHECK(epoch_order(a) == a0);

  o.shuffle = false;
  DataLoader in_order(d, o);
  const std::vector<int64_t> order = epoch_order(in_order);
  for (int64_t i = 0; i < 500; ++i) CHECK(order[i] == i);
  CHECK(epoch_order(in_order) == order);
}

TEST_CASE("DataLoader: a saved state resumes the same batches", "[data]") {
  const Dataset d = indexed_dataset(300);
  DataLoaderOptions o;
  o.batch_size = 32;  // 10 batches: 9 * 32 + 12
  o.seed = 3;
  DataLoader loader(d, o);
  take(loader, 14);  // into the second epoch
  SECTION("in the middle of an epoch") {
    const tq::io::LoaderState saved = loader.state();
    CHECK(saved.epoch == 1);
    CHECK(saved.next_batch == 3);
    const auto expected = take(loader, 25);  // crosses two epoch boundaries
    DataLoaderOptions other = o;
    other.seed = 999;  // the state carries the generator: the seed does not matter
    DataLoader resumed(d, other);
    resumed.set_state(saved);
    CHECK(resumed.epoch() == 1);
    CHECK(resumed.permutation() == [&] {
      DataLoader again(d, o);
      again.set_state(saved);
      return again.permutation();
    }());
    CHECK(take(resumed, 25) == expected);
  }
  SECTION("at the end of an epoch") {
    take(loader, 7);  // through the last batch of epoch 1, not yet past the boundary
    const tq::io::LoaderState saved = loader.state();
    CHECK(saved.next_batch == 10);
    const auto expected = take(loader, 12);
    DataLoader resumed(d, o);
    resumed.set_state(saved);
    CHECK(take(resumed, 12) == expected);
  }
  SECTION("a state from other data or options is refused") {
    tq::io::LoaderState saved = loader.state();
    DataLoaderOptions bigger = o;
    bigger.batch_size = 64;
    DataLoader other(d, bigger);
    REQUIRE_THROWS_WITH(other.set_state(saved), Contains("saved for 300 samples, batch_size 32") &&
                                                    Contains("this loader has 300 samples, batch_size 64"));
    saved.next_batch = 11;
    REQUIRE_THROWS_WITH(loader.set_state(saved), Contains("next_batch 11 is outside 0..10"));
  }
}

TEST_CASE("DataLoader: normalisation (x / 255 - mean) / std, labels as i64", "[data]") {
  Dataset d;
  d.images = tq::from_bytes(std::vector<uint8_t>{0, 255, 73, 128}.data(), tq::DType::u8, {2, 2});
  d.labels = tq::from_bytes(std::vector<uint8_t>{3, 9}.data(), tq::DType::u8, {2});
  DataLoaderOptions o;
  o.batch_size = 2;
  o.shuffle = false;
  DataLoader loader(d, o);
  Batch b;
  REQUIRE(loader.next(b));
  const float* x = b.images.data<float>();
  CHECK(x[0] == Approx((0.0 - 0.2860) / 0.3530).margin(kNormalisedTolerance));   // -0.81020
  CHECK(x[1] == Approx((1.0 - 0.2860) / 0.3530).margin(kNormalisedTolerance));   // 2.02266
  CHECK(x[2] == Approx((73 / 255.0 - 0.2860) / 0.3530).margin(kNormalisedTolerance));
  CHECK(x[3] == Approx((128 / 255.0 - 0.2860) / 0.3530).margin(kNormalisedTolerance));
  CHECK(b.labels.data<int64_t>()[0] == 3);
  CHECK(b.labels.data<int64_t>()[1] == 9);
  REQUIRE_FALSE(loader.next(b));
  CHECK(loader.epoch() == 1);

  // Real data: a batch of the test set reproduces its pixels.
  const Dataset test = fashion_test_set().slice(0, 256);
  DataLoader real(test, {.batch_size = 256, .shuffle = false});
  REQUIRE(real.next(b));
  REQUIRE(b.images.shape() == tq::Shape{256, 784});
  CHECK(b.labels.data<int64_t>()[0] == 9);
  for (int k : {0, 14 * 28 + 12, 783})
    CHECK(pixel_of(b.images.data<float>()[k], real.options()) == test.images.data<uint8_t>()[k]);
}

TEST_CASE("DataLoader: batch buffers are reused only when nobody else holds them", "[data]") {
  const Dataset d = indexed_dataset(256);
  DataLoaderOptions o;
  o.batch_size = 64;
  DataLoader loader(d, o);
  Batch b;
  REQUIRE(loader.next(b));
  const float* first = b.images.data<float>();
  REQUIRE(loader.next(b));
  CHECK(b.images.data<float>() == first);  // overwritten in place

  const tq::Tensor kept = b.images;  // e.g. saved by autograd for the backward pass
  const std::vector<float> kept_values = tq::to_vector(kept);
  REQUIRE(loader.next(b));
  CHECK_FALSE(b.images.same(kept));
  CHECK(tq::to_vector(kept) == kept_values);  // the kept batch did not change
}

TEST_CASE("DataLoader: bad arguments", "[data]") {
  const Dataset d = indexed_dataset(10);
  REQUIRE_THROWS_WITH(DataLoader(d, {.batch_size = 0}), Contains("batch_size must be positive, got 0"));
  REQUIRE_THROWS_WITH(DataLoader(d, {.batch_size = 16, .drop_last = true}),
                      Contains("no batches: 10 samples, batch_size 16 with drop_last"));
  REQUIRE_THROWS_WITH(DataLoader(d.images, tq::kernels::slice(d.labels, 0, 0, 9)), Contains("labels (10)"));
  REQUIRE_THROWS_WITH(DataLoader(tq::zeros({10, 2}), d.labels), Contains("expected u8 images (N, ...), found f32 (10, 2)"));
}

TEST_CASE("DataLoader: as_images hands (B, 1, H, W) batches with the rows' values", "[data]") {
  std::vector<uint8_t> pixels(5 * 3 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  Dataset d;
  d.images = tq::from_bytes(pixels.data(), tq::DType::u8, {5, 3, 4});
  d.labels = tq::from_bytes(std::vector<uint8_t>{0, 1, 2, 3, 4}.data(), tq::DType::u8, {5});
  DataLoaderOptions rows{.batch_size = 2, .seed = 5};
  DataLoaderOptions images = rows;
  images.as_images = true;
  DataLoader flat(d, rows), nchw(d, images);
  Batch a, b;
  int64_t batches = 0;
  while (flat.next(a)) {
    REQUIRE(nchw.next(b));
    ++batches;
    REQUIRE(a.images.shape() == tq::Shape{a.size(), 12});
    REQUIRE(b.images.shape() == tq::Shape{a.size(), 1, 3, 4});
    for (int64_t k = 0; k < a.images.numel(); ++k) CHECK(b.images.data<float>()[k] == a.images.data<float>()[k]);
    for (int64_t k = 0; k < a.size(); ++k) CHECK(b.labels.data<int64_t>()[k] == a.labels.data<int64_t>()[k]);
  }
  CHECK(batches == 3);  // 2 + 2 + 1: the last partial batch is (1, 1, 3, 4)

  // Rows of data that have no image shape cannot be handed as images.
  Dataset rows_only;
  rows_only.images = tq::from_bytes(pixels.data(), tq::DType::u8, {5, 12});
  rows_only.labels = d.labels;
  CHECK_THROWS_WITH(DataLoader(rows_only, images), Catch::Matchers::Contains("as_images"));
}
