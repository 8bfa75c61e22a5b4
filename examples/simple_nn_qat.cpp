// PyTorch's SimpleNN quantization-aware training lesson (docs/lesson.md), line for line, and then
// what the PyTorch original cannot do: run the int8 model on a float input.
// Run: ./build/examples/simple_nn_qat
#include <cstdio>
#include <iostream>

#include "tinyqat.h"

using namespace tq;

struct SimpleNN : nn::Module {
  nn::Slot<nn::Linear> fc1 = register_module("fc1", nn::Linear(10, 5));
  nn::Slot<nn::Linear> fc2 = register_module("fc2", nn::Linear(5, 2));

  Tensor forward(const Tensor& x) override {
    Tensor h = relu(fc1(x));
    return relu(fc2(h));
  }
};

// Part 2: a seeded synthetic two-class task (class 1 when x0 + x1 > x2 - x3).
static Tensor labels_for(const Tensor& x) {
  std::vector<int64_t> y(static_cast<size_t>(x.size(0)));
  for (int64_t i = 0; i < x.size(0); ++i) y[i] = x.at({i, 0}) + x.at({i, 1}) > x.at({i, 2}) - x.at({i, 3}) ? 1 : 0;
  return from_vector_i64(y, {x.size(0)});
}

static double accuracy(nn::Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard no_grad;
  Tensor pred = argmax(model(x), 1);
  int64_t correct = 0;
  for (int64_t i = 0; i < x.size(0); ++i) correct += pred.at({i}) == y.at({i});
  return 100.0 * static_cast<double>(correct) / static_cast<double>(x.size(0));
}

int main() {
  manual_seed(0);

  // ---- Part 1: the SimpleNN QAT lesson, line for line ----
  SimpleNN model;
  model.qconfig = quant::get_default_qat_qconfig("fbgemm");
  quant::prepare_qat(model);

  nn::SGD optimizer(model.parameters(), 0.01);
  nn::CrossEntropyLoss criterion;

  Tensor input = randn({1, 10});
  Tensor target = from_vector_i64({1}, {1});

  optimizer.zero_grad();
  Tensor output = model(input);
  Tensor loss = criterion(output, target);
  loss.backward();
  optimizer.step();

  model.eval();
  Tensor fake_quant_output;
  {
    NoGradGuard no_grad;
    fake_quant_output = model(input);  // what the int8 model should reproduce
  }
  quant::convert(model);
  std::cout << model << "\n\n";

  // ---- Beyond the original: the int8 model takes the float input ----
  Tensor int8_output = model(input);
  std::cout << "int8 output:       " << int8_output << "\n";
  std::cout << "as float:          " << quant::dequantize(int8_output) << "\n";
  std::cout << "fake-quant output: " << fake_quant_output << "\n\n";

  // ---- Part 2: learn a task with QAT, then compare float / fake quant / int8 ----
  manual_seed(1);
  Generator data(7);
  Tensor x_train = randn({512, 10}, data), x_test = randn({1000, 10}, data);
  Tensor y_train = labels_for(x_train), y_test = labels_for(x_test);

  SimpleNN net;
  nn::SGD float_opt(net.parameters(), {.lr = 0.1, .momentum = 0.9});
  for (int epoch = 0; epoch < 30; ++epoch)
    for (int64_t b = 0; b < 512; b += 32) {
      float_opt.zero_grad();
      Tensor l = criterion(net(slice(x_train, 0, b, b + 32)), slice(y_train, 0, b, b + 32));
      l.backward();
      float_opt.step();
    }
  net.eval();
  const double float_acc = accuracy(net, x_test, y_test);

  net.qconfig = quant::get_default_qat_qconfig("x86");
  quant::prepare_qat(net);
  nn::SGD qat_opt(net.parameters(), {.lr = 0.01, .momentum = 0.9});
  for (int epoch = 0; epoch < 5; ++epoch)
    for (int64_t b = 0; b < 512; b += 32) {
      qat_opt.zero_grad();
      Tensor l = criterion(net(slice(x_train, 0, b, b + 32)), slice(y_train, 0, b, b + 32));
      l.backward();
      qat_opt.step();
    }
  net.eval();
  const double fq_acc = accuracy(net, x_test, y_test);
  Tensor fq_pred;
  {
    NoGradGuard g;
    fq_pred = argmax(net(x_test), 1);
  }
  quant::convert(net);
  const double int8_acc = accuracy(net, x_test, y_test);
  Tensor int8_pred = argmax(net(x_test), 1);
  int64_t same = 0;
  for (int64_t i = 0; i < 1000; ++i) same += fq_pred.at({i}) == int8_pred.at({i});
  std::printf("synthetic task, 1000 test points\n");
  std::printf("  float accuracy       %6.2f%%\n", float_acc);
  std::printf("  fake-quant accuracy  %6.2f%%\n", fq_acc);
  std::printf("  int8 accuracy        %6.2f%%\n", int8_acc);
  std::printf("  fake-quant vs int8 predictions agree on %.2f%%\n", static_cast<double>(same) / 10.0);
  return 0;
}
