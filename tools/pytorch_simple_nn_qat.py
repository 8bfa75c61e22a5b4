#!/usr/bin/env python3
"""The PyTorch eager-mode QAT lesson that tinyqat's SimpleNN examples follow,
rewritten to run as it is and show where it stops (docs/lesson.md).

Needs PyTorch (Debian: apt-get install python3-torch python3-torchvision;
measured with 1.13). Not used by the build or the tests.

    /usr/bin/python3 tools/pytorch_simple_nn_qat.py
"""
import torch
import torch.nn as nn
import torch.ao.quantization as tq


class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))  # ReLU on the logits too


torch.manual_seed(0)
model = SimpleNN()
model.qconfig = tq.get_default_qat_qconfig("fbgemm")
model.train()
tq.prepare_qat(model, inplace=True)

optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
criterion = nn.CrossEntropyLoss()
x, target = torch.randn(1, 10), torch.tensor([1])
optimizer.zero_grad()
loss = criterion(model(x), target)
loss.backward()
optimizer.step()

model.eval()
tq.convert(model, inplace=True)
print(model)
try:
    print(model(x))  # a float tensor reaches quantized::linear: no QuantStub in the model
except Exception as e:  # NotImplementedError in 1.13
    print(f"{type(e).__name__}: {str(e).splitlines()[0]}")
