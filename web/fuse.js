// Fuses two images in the browser with a graph from `semfuse-rt export` (see README.md here),
// in onnxruntime-web: WebGPU where the browser has it, WASM otherwise. Nothing leaves the page.
//
//   index.html?model=URL       the graph (default: fuse.onnx beside the page)
//   index.html?backend=wasm    WASM even where there is WebGPU (webgpu: WebGPU or an error)
//
// The graph's contract: `images` (2, H, W, 3) uint8 RGB -> `fused` (H, W, 3) and `fused_luma`
// (H, W) uint8. What it takes (the number of images, the range of shorter sides) is the JSON
// of its metadata entry `semfuse_rt`, read here from the model's bytes because
// onnxruntime-web's session does not expose a model's metadata.
//
// For tests (tests/test_web_page.py): `document.body.dataset.state` is loading, ready,
// fusing, fused or error, and `window.semfuse` holds the decoded inputs and the last result.
import * as ort from './node_modules/onnxruntime-web/dist/ort.min.mjs';

// The WASM binaries are served from the npm package beside the page, never from a CDN.
ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.logLevel = 'error';

const params = new URLSearchParams(window.location.search);
const modelUrl = params.get('model') ?? 'fuse.onnx';
const backendAsked = params.get('backend');
const METADATA_KEY = 'semfuse_rt';

const element = (id) => document.getElementById(id);
const slots = ['a', 'b'].map((name) => ({
  input: element(`image-${name}`), preview: element(`preview-${name}`), size: element(`size-${name}`), image: null,
}));
const resultCanvas = element('result');
const againButton = element('fuse-again');
const downloadButton = element('download');

window.semfuse = { inputs: [null, null], result: null, fuses: 0, error: null, backend: null, terms: null };

// A problem with what the user gave, said in one line; anything else is a fault of the page or the model.
class InputError extends Error {}

function setState(state, message = '') {
  document.body.dataset.state = state;
  element('message').textContent = message;
  window.semfuse.error = state === 'error' ? message : null;
}

// ---------------------------------------------------------------------------- the model

function readVarint(bytes, at) {
  let value = 0;
  let scale = 1;
  let byte;
  do {
    if (at >= bytes.length) throw new Error('truncated');
    byte = bytes[at++];
    value += (byte & 0x7f) * scale; // arithmetic, not bit operations: lengths may pass 2^31
    scale *= 128;
  } while (byte & 0x80);
  return [value, at];
}

// The ModelProto's metadata_props (field 14: entries of key = 1, value = 2) as an object,
// walking only the top level of the protobuf so that the graph itself is skipped, not parsed.
function modelMetadata(bytes) {
  const decoder = new TextDecoder();
  const entries = {};
  let at = 0;
  while (at < bytes.length) {
    let tag;
    let length;
    [tag, at] = readVarint(bytes, at);
    const [field, wire] = [Math.floor(tag / 8), tag % 8];
    if (wire === 0) [, at] = readVarint(bytes, at);
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      [length, at] = readVarint(bytes, at);
      if (field === 14) {
        const entry = {};
        for (let inner = at; inner < at + length;) {
          let innerTag;
          let size;
          [innerTag, inner] = readVarint(bytes, inner);
          [size, inner] = readVarint(bytes, inner);
          entry[innerTag >> 3] = decoder.decode(bytes.subarray(inner, inner + size));
          inner += size;
        }
        entries[entry[1]] = entry[2];
      }
      at += length;
    } else throw new Error(`wire type ${wire}`);
  }
  if (at !== bytes.length) throw new Error('truncated');
  return entries;
}

async function webgpuAdapter() {
  if (!navigator.gpu) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

async function createSession(bytes) {
  if (backendAsked !== null && !['wasm', 'webgpu'].includes(backendAsked)) {
    throw new Error(`?backend=${backendAsked}: the page runs on wasm or webgpu`);
  }
  // 'parallel': onnxruntime 1.31's sequential planner is quadratic in the node count, and a
  // blend graph has some 20,000 nodes (a minute to load, against seconds this way).
  const options = { graphOptimizationLevel: 'all', executionMode: 'parallel', logSeverityLevel: 3 };
  if (backendAsked === 'webgpu' || (backendAsked === null && await webgpuAdapter())) {
    try {
      // Nodes WebGPU has no kernel for run on the WASM CPU provider. A copy of the bytes:
      // creating a session may transfer its buffer, and WASM may need them after.
      const session = await ort.InferenceSession.create(bytes.slice(),
        { ...options, executionProviders: ['webgpu', 'wasm'] });
      return { session, backend: 'WebGPU' };
    } catch (error) {
      if (backendAsked === 'webgpu') throw new Error(`WebGPU cannot run ${modelUrl}: ${error.message}`);
      console.warn(`WebGPU cannot run ${modelUrl}, using WASM:`, error);
    }
  } else {
    // WASM alone runs in a worker: a fuse is seconds of computation, which on the main thread
    // would freeze the page. (Set before the first session, which starts the runtime.)
    ort.env.wasm.proxy = true;
  }
  const session = await ort.InferenceSession.create(bytes, { ...options, executionProviders: ['wasm'] });
  return { session, backend: 'WASM' };
}

function describeSides([low, high]) {
  return high === null ? `${low} pixels or more` : `${low} to ${high} pixels`;
}

// The model's bytes and what it takes: fetched and read at once, so that images it does not
// take are refused without waiting for the session.
async function fetchModel() {
  let response;
  try {
    response = await fetch(modelUrl);
  } catch (error) {
    throw new Error(`${modelUrl}: cannot fetch the model (${error.message})`);
  }
  if (!response.ok) {
    throw new Error(`${modelUrl}: HTTP ${response.status} ${response.statusText}; export one with ` +
      '`semfuse-rt export -o web/fuse.onnx`, or name it with ?model=URL');
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  let entry;
  try {
    entry = modelMetadata(bytes)[METADATA_KEY];
  } catch (error) {
    throw new Error(`${modelUrl}: not an ONNX model (${error.message})`);
  }
  if (entry === undefined) throw new Error(`${modelUrl}: not a graph from semfuse-rt export (no ${METADATA_KEY} metadata)`);
  const terms = JSON.parse(entry);
  if (terms.images !== 2) {
    throw new Error(`${modelUrl} fuses ${terms.images} images; this page fuses two: export one with --inputs 2`);
  }
  window.semfuse.terms = terms;
  return { bytes, terms };
}

async function loadModel(fetched) {
  const { bytes, terms } = await fetched;
  element('model').textContent = `Loading ${modelUrl} (${terms.images} images whose shorter side is ` +
    `${describeSides(terms.shorter_side)})…`;
  const { session, backend } = await createSession(bytes);
  window.semfuse.backend = backend;
  element('model').textContent = `Model ${modelUrl}: ${terms.images} images whose shorter side is ` +
    `${describeSides(terms.shorter_side)}, on ${backend}.`;
  return { session, backend, terms };
}

// ---------------------------------------------------------------------------- the images

// RGBA as the file holds it: no colour management (as semfuse-rt reads files), EXIF
// orientation applied (as semfuse-rt does). Alpha is dropped later, as semfuse-rt drops it.
async function decode(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image',
    });
  } catch {
    throw new InputError(`${file.name}: the browser cannot decode this file as an image`);
  }
  const { width, height } = bitmap;
  const canvas = document.createElement('canvas');
  [canvas.width, canvas.height] = [width, height];
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const imageData = context.getImageData(0, 0, width, height);
  const rgba = imageData.data;
  // The browser gives every image as RGBA; a grey file is one whose three channels agree.
  let grey = true;
  for (let i = 0; i < rgba.length && grey; i += 4) grey = rgba[i] === rgba[i + 1] && rgba[i] === rgba[i + 2];
  return { name: file.name, width, height, grey, rgba, imageData };
}

function checkPair([a, b], terms) {
  if (a.width !== b.width || a.height !== b.height) {
    throw new InputError(`the images differ in size (${a.name} ${a.width} x ${a.height}, ${b.name} ` +
      `${b.width} x ${b.height}); fusion needs registered images of one size`);
  }
  if (a.grey !== b.grey) {
    const [grey, colour] = a.grey ? [a, b] : [b, a];
    throw new InputError(`${grey.name} is grey and ${colour.name} colour; semfuse-rt fuse keeps the colour ` +
      "image's chroma, this page does not: give two grey or two colour images");
  }
  const [low, high] = terms.shorter_side;
  const shorter = Math.min(a.width, a.height);
  if (shorter < low || (high !== null && shorter > high)) {
    const fix = high === null ? '' : `: export a graph for them with semfuse-rt export --size ${a.width}x${a.height}`;
    throw new InputError(`${modelUrl} takes images whose shorter side is ${describeSides([low, high])}; ` +
      `these have ${shorter}${fix}`);
  }
}

// ---------------------------------------------------------------------------- the fuse

async function fuse(model, images) {
  const [{ width, height }] = images;
  const plane = width * height;
  const stack = new Uint8Array(images.length * plane * 3); // (K, H, W, 3): RGBA without the alpha
  images.forEach((image, k) => {
    const base = k * plane * 3;
    for (let i = 0; i < plane; i++) {
      stack[base + 3 * i] = image.rgba[4 * i];
      stack[base + 3 * i + 1] = image.rgba[4 * i + 1];
      stack[base + 3 * i + 2] = image.rgba[4 * i + 2];
    }
  });
  const feeds = { images: new ort.Tensor('uint8', stack, [images.length, height, width, 3]) };
  const start = performance.now();
  const outputs = await model.session.run(feeds);
  const ms = performance.now() - start;
  // A grey set's result is fused_luma, rounded once from the fused image, as semfuse-rt fuse gives it.
  const grey = images.every((image) => image.grey);
  const pixels = grey ? outputs.fused_luma.data : outputs.fused.data;
  return { width, height, channels: grey ? 1 : 3, pixels, ms, backend: model.backend };
}

function show(result) {
  const { width, height, channels, pixels } = result;
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = pixels[channels * i + (channels === 1 ? 0 : c)];
    rgba[4 * i + 3] = 255;
  }
  [resultCanvas.width, resultCanvas.height] = [width, height];
  resultCanvas.getContext('2d').putImageData(new ImageData(rgba, width, height), 0, 0);
  element('timing').textContent = `${width} x ${height}, ${channels === 1 ? 'grey' : 'colour'}: ` +
    `fused in ${result.ms.toFixed(1)} ms (${result.backend})`;
}

const termsReady = fetchModel();
const modelReady = loadModel(termsReady);
modelReady.then(() => {
  if (document.body.dataset.state === 'loading') setState('ready');
}, (error) => setState('error', error.message));

// One run at a time: a session does not take overlapping runs, and the last images chosen win.
let queue = Promise.resolve();
let generation = 0;

async function fuseChosen() {
  const images = slots.map((slot) => slot.image);
  if (images.includes(null)) return;
  const mine = ++generation;
  const terms = await termsReady.then(({ terms }) => terms, () => null);
  if (terms === null || mine !== generation) return; // the model's error is on the page already
  try {
    checkPair(images, terms);
  } catch (error) {
    setState('error', error.message);
    return;
  }
  setState('fusing');
  againButton.disabled = downloadButton.disabled = true;
  element('timing').textContent = 'fusing…';
  queue = queue.then(async () => {
    const model = await modelReady.catch(() => null);
    if (model === null || mine !== generation) return;
    try {
      const result = await fuse(model, images);
      if (mine !== generation) return;
      window.semfuse.result = result;
      window.semfuse.fuses += 1;
      show(result);
      againButton.disabled = downloadButton.disabled = false;
      setState('fused');
    } catch (error) {
      if (mine === generation) setState('error', `the fuse failed: ${error.message}`);
    }
  });
}

async function choose(slotIndex, file) {
  const slot = slots[slotIndex];
  slot.image = null;
  window.semfuse.inputs[slotIndex] = null;
  try {
    const image = await decode(file);
    [slot.preview.width, slot.preview.height] = [image.width, image.height];
    slot.preview.getContext('2d').putImageData(image.imageData, 0, 0);
    slot.size.textContent = `${image.name}: ${image.width} x ${image.height}, ${image.grey ? 'grey' : 'colour'}`;
    slot.image = image;
    window.semfuse.inputs[slotIndex] = image;
  } catch (error) {
    [slot.preview.width, slot.preview.height] = [0, 0];
    slot.size.textContent = 'drop or choose a file';
    setState('error', error instanceof InputError ? error.message : `${file.name}: ${error.message}`);
    return;
  }
  fuseChosen();
}

// Two files fill both slots; one file fills slot `onto`, else the first empty one.
function chooseFiles(files, onto = -1) {
  if (files.length > 2) {
    setState('error', `${files.length} files given; this page fuses two images`);
  } else if (files.length === 2) {
    files.forEach((file, index) => choose(index, file));
  } else if (files.length === 1) {
    const empty = slots.findIndex((slot) => slot.image === null);
    choose(onto >= 0 ? onto : Math.max(empty, 0), files[0]);
  }
}

slots.forEach((slot, index) => {
  slot.input.addEventListener('change', () => chooseFiles([...slot.input.files], index));
});
element('images').addEventListener('change', (event) => chooseFiles([...event.target.files]));

againButton.addEventListener('click', fuseChosen);

downloadButton.addEventListener('click', () => {
  resultCanvas.toBlob((blob) => {
    const link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = 'fused.png';
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }, 'image/png');
});

// Files dropped on a slot go there, as chooseFiles places them. A file dropped outside the
// zone must not open in the tab.
const dropZone = element('drop-zone');
for (const type of ['dragover', 'drop']) window.addEventListener(type, (event) => event.preventDefault());
dropZone.addEventListener('dragover', () => dropZone.classList.add('dragging'));
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'));
dropZone.addEventListener('drop', (event) => {
  dropZone.classList.remove('dragging');
  const target = event.target.closest('.slot');
  chooseFiles([...event.dataTransfer.files], slots.findIndex((slot) => slot.input.closest('.slot') === target));
});
