// Fuse registered images with a graph from `semfuse-rt export`, in Node.js with onnxruntime-node.
//
//     node fuse_onnx.mjs fuse.onnx A.ppm B.ppm [C.ppm ...] -o fused.ppm
//
// Images are binary Netpbm files, so that no image library is needed: PGM (P5, grey) or
// PPM (P6, RGB), 8-bit. All grey give a grey result (PGM), all RGB an RGB one (PPM).
// Convert others first, e.g. `magick in.jpg out.ppm` or Pillow's Image.save("out.ppm").
import { readFileSync, writeFileSync } from 'node:fs';
import ort from 'onnxruntime-node';

function fail(message) {
  console.error(`fuse_onnx: error: ${message}`);
  process.exit(2);
}

// A binary Netpbm image: { width, height, channels (1 or 3), pixels (Uint8Array, row-major) }.
function readNetpbm(path) {
  let data;
  try {
    data = readFileSync(path);
  } catch (error) {
    fail(`${path}: cannot read (${error.message})`);
  }
  const fields = [];
  let at = 0;
  while (fields.length < 4) {
    while (at < data.length && /\s/.test(String.fromCharCode(data[at]))) at++;
    if (data[at] === 0x23) { // a comment, to the end of its line
      while (at < data.length && data[at] !== 0x0a) at++;
      continue;
    }
    const start = at;
    while (at < data.length && !/\s/.test(String.fromCharCode(data[at]))) at++;
    if (start === at) fail(`${path}: not a binary PGM or PPM file`);
    fields.push(data.toString('latin1', start, at));
  }
  const [magic, width, height, maximum] = [fields[0], Number(fields[1]), Number(fields[2]), Number(fields[3])];
  const channels = { P5: 1, P6: 3 }[magic];
  if (!channels) fail(`${path}: ${magic} is not a binary PGM (P5) or PPM (P6) file`);
  if (maximum !== 255) fail(`${path}: maximum value ${maximum}; only 8-bit (255) images are read`);
  const pixels = data.subarray(at + 1, at + 1 + width * height * channels);
  if (pixels.length !== width * height * channels) fail(`${path}: truncated`);
  return { width, height, channels, pixels };
}

function writeNetpbm(path, width, height, channels, pixels) {
  const header = Buffer.from(`${channels === 1 ? 'P5' : 'P6'}\n${width} ${height}\n255\n`, 'latin1');
  writeFileSync(path, Buffer.concat([header, Buffer.from(pixels.buffer, pixels.byteOffset, pixels.length)]));
}

const args = process.argv.slice(2);
const flag = args.indexOf('-o');
if (flag < 0 || flag + 1 >= args.length || flag < 3) {
  fail('usage: node fuse_onnx.mjs GRAPH.onnx A B [C ...] -o OUT');
}
const output = args[flag + 1];
const [graph, ...inputs] = args.slice(0, flag);

// Errors come back to this script, which says them in one line: ONNX Runtime logs nothing itself.
const session = await ort.InferenceSession.create(graph, { logSeverityLevel: 4 });
const count = session.inputMetadata?.[0]?.shape?.[0];
if (typeof count === 'number' && inputs.length !== count) fail(`${graph} fuses ${count} images; got ${inputs.length}`);
const images = inputs.map(readNetpbm);
const { width, height } = images[0];
if (images.some((image) => image.width !== width || image.height !== height)) {
  fail('the inputs differ in size; fusion needs registered images of one size');
}
const grey = images.every((image) => image.channels === 1);
if (!grey && images.some((image) => image.channels === 1)) {
  fail('grey and colour inputs mixed: convert them all to grey or all to RGB');
}

// (K, H, W, 3) uint8: a grey image replicated to the three channels.
const plane = width * height;
const stack = new Uint8Array(images.length * plane * 3);
images.forEach((image, k) => {
  const base = k * plane * 3;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      stack[base + 3 * i + c] = image.pixels[image.channels === 1 ? i : 3 * i + c];
    }
  }
});
let results;
try {
  results = await session.run({ images: new ort.Tensor('uint8', stack, [images.length, height, width, 3]) });
} catch (error) {
  // Sizes the graph does not take fail in its size check, whose name says which it takes.
  const check = /size check: (.*?) \(fused/.exec(error.message);
  fail(check ? `${graph}: ${check[1]}` : error.message.split('\n')[0]);
}
const fused = grey ? results.fused_luma : results.fused;
writeNetpbm(output, width, height, grey ? 1 : 3, fused.data);
