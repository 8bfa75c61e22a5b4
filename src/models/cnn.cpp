// The small CNN (see cnn.h for the shapes).
#include "models/cnn.h"

#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/pooling.h"

namespace tq::models {

std::shared_ptr<nn::Sequential> cnn(int64_t num_classes) {
  auto m = std::make_shared<nn::Sequential>();
  m->push_back("conv1", nn::Conv2d(1, 32, 3, 1, 1));
  m->push_back("bn1", nn::BatchNorm2d(32));
  m->push_back("relu1", nn::ReLU());
  m->push_back("pool1", nn::MaxPool2d(2));
  m->push_back("conv2", nn::Conv2d(32, 64, 3, 1, 1));
  m->push_back("bn2", nn::BatchNorm2d(64));
  m->push_back("relu2", nn::ReLU());
  m->push_back("pool2", nn::MaxPool2d(2));
  m->push_back("flatten", nn::Flatten(1));
  m->push_back("fc1", nn::Linear(64 * 7 * 7, 128));
  m->push_back("relu3", nn::ReLU());
  m->push_back("fc2", nn::Linear(128, num_classes));
  return m;
}

}  // namespace tq::models
