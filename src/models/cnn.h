// A small convolutional network for 28x28 one-channel images (Fashion-MNIST):
//
//   conv1  Conv2d(1, 32, 3, padding 1)  + bn1 BatchNorm2d(32) + relu1   (N, 32, 28, 28)
//   pool1  MaxPool2d(2)                                                 (N, 32, 14, 14)
//   conv2  Conv2d(32, 64, 3, padding 1) + bn2 BatchNorm2d(64) + relu2   (N, 64, 14, 14)
//   pool2  MaxPool2d(2)                                                 (N, 64, 7, 7)
//   flatten                                                             (N, 3136)
//   fc1    Linear(3136, 128) + relu3, fc2 Linear(128, 10)               (N, 10)
//
// 421,834 parameters. The layers are named children of a Sequential, so the
// model prints, saves and quantizes by those names.
#pragma once

#include <memory>

#include "nn/sequential.h"

namespace tq::models {

// Initialised from the global generator (manual_seed first for a repeatable model).
std::shared_ptr<nn::Sequential> cnn(int64_t num_classes = 10);

}  // namespace tq::models
