// Runs an ONNX model in ONNX Runtime (CPU) on one float tensor read from a
// file and writes its output tensor to another file.
//   node tools/onnx/run.js MODEL.onnx INPUT.bin OUTPUT.bin
// Tensor file: "TQT1", u32 rank, rank x i64 dims, then f32 values, all
// little-endian, row-major. Exit status 1 with a message on any error.
'use strict';
const fs = require('fs');
const path = require('path');

function readTensor(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 8 || buf.toString('latin1', 0, 4) !== 'TQT1') throw new Error(`${file}: not a TQT1 tensor file`);
  const rank = buf.readUInt32LE(4);
  const dims = [];
  let off = 8;
  for (let i = 0; i < rank; i++, off += 8) dims.push(Number(buf.readBigInt64LE(off)));
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== off + 4 * count) throw new Error(`${file}: ${buf.length - off} data bytes for ${count} floats`);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = buf.readFloatLE(off + 4 * i);
  return { dims, data };
}

function writeTensor(file, dims, data) {
  const buf = Buffer.alloc(8 + 8 * dims.length + 4 * data.length);
  buf.write('TQT1', 0, 'latin1');
  buf.writeUInt32LE(dims.length, 4);
  let off = 8;
  for (const d of dims) { buf.writeBigInt64LE(BigInt(d), off); off += 8; }
  for (let i = 0; i < data.length; i++) buf.writeFloatLE(data[i], off + 4 * i);
  fs.writeFileSync(file, buf);
}

async function main() {
  const [model, input, output] = process.argv.slice(2);
  if (!output) throw new Error('usage: node run.js MODEL.onnx INPUT.bin OUTPUT.bin');
  let ort;
  try {
    ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));
  } catch (e) {
    throw new Error('onnxruntime-node is not installed: run scripts/setup.sh ' +
                    '(cd tools/onnx && npm install --ignore-scripts)');
  }
  // One thread: the result must not depend on how the work is split.
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const x = readTensor(input);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) };
  const result = await session.run(feeds);
  const y = result[session.outputNames[0]];
  if (y.type !== 'float32') throw new Error(`output is ${y.type}, expected float32`);
  writeTensor(output, y.dims, y.data);
}

main().catch((e) => { console.error(`run.js: ${e.message}`); process.exit(1); });
