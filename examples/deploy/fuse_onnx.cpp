// Fuse registered images with a graph from `semfuse-rt export`, in C++ with ONNX Runtime's
// C API (through its header-only C++ wrapper, onnxruntime_cxx_api.h).
//
//     fuse_onnx fuse.onnx A.ppm B.ppm [C.ppm ...] -o fused.ppm
//
// Images are binary Netpbm files, so that no image library is needed: PGM (P5, grey) or
// PPM (P6, RGB), 8-bit. All grey give a grey result (PGM), all RGB an RGB one (PPM).
// Convert others first, e.g. `magick in.jpg out.ppm` or Pillow's Image.save("out.ppm").
// Build: see the Makefile beside this file.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "fuse_onnx: error: " << message << '\n';
  std::exit(2);
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

struct Image {
  int width = 0, height = 0, channels = 0;  // channels: 1 (PGM) or 3 (PPM)
  std::vector<std::uint8_t> pixels;         // row-major, channels interleaved
};

Image read_netpbm(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path + ": cannot read");
  const std::string data((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::string> fields;  // magic, width, height, maximum
  std::size_t at = 0;
  while (fields.size() < 4) {
    while (at < data.size() && std::isspace(static_cast<unsigned char>(data[at]))) at++;
    if (at < data.size() && data[at] == '#') {  // a comment, to the end of its line
      at = data.find('\n', at);
      if (at == std::string::npos) at = data.size();
      continue;
    }
    const std::size_t start = at;
    while (at < data.size() && !std::isspace(static_cast<unsigned char>(data[at]))) at++;
    if (start == at) fail(path + ": not a binary PGM or PPM file");
    fields.push_back(data.substr(start, at - start));
  }
  Image image;
  if (fields[0] == "P5") image.channels = 1;
  else if (fields[0] == "P6") image.channels = 3;
  else fail(path + ": not a binary PGM (P5) or PPM (P6) file");
  const auto number = [&](const std::string& field) {
    if (field.empty() || field.size() > 6 || field.find_first_not_of("0123456789") != std::string::npos) {
      fail(path + ": not a binary PGM or PPM file (bad header)");
    }
    return std::stoi(field);
  };
  image.width = number(fields[1]);
  image.height = number(fields[2]);
  const int maximum = number(fields[3]);
  if (maximum != 255) fail(path + ": maximum value " + std::to_string(maximum) + "; only 8-bit (255) images are read");
  const std::size_t size = static_cast<std::size_t>(image.width) * image.height * image.channels;
  if (size == 0) fail(path + ": the image is empty");
  if (at + 1 + size > data.size()) fail(path + ": truncated");
  image.pixels.assign(data.begin() + static_cast<std::ptrdiff_t>(at + 1),
                      data.begin() + static_cast<std::ptrdiff_t>(at + 1 + size));
  return image;
}

// Written beside the target and renamed into place, so that a failed write leaves no part-file.
void write_netpbm(const std::string& path, int width, int height, int channels, const std::uint8_t* pixels) {
  const std::string partial = path + ".partial";
  {
    std::ofstream file(partial, std::ios::binary);
    file << (channels == 1 ? "P5" : "P6") << '\n' << width << ' ' << height << "\n255\n";
    file.write(reinterpret_cast<const char*>(pixels), static_cast<std::streamsize>(width) * height * channels);
    file.close();  // a full disk shows at the last flush
    if (!file) {
      std::remove(partial.c_str());
      fail(path + ": cannot write");
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    std::remove(partial.c_str());
    fail(path + ": cannot write");
  }
}

// The accepted shorter sides, from the graph's metadata entry `semfuse_rt` (JSON written by
// the exporter): "shorter_side": [low, high] with high null where there is no upper bound.
struct SideRange {
  long low;
  std::optional<long> high;
};

SideRange shorter_sides(const std::string& graph, const std::string& terms) {
  static const std::regex entry(R"re("shorter_side"\s*:\s*\[\s*(\d+)\s*,\s*(\d+|null)\s*\])re");
  std::smatch match;
  if (!std::regex_search(terms, match, entry)) fail(graph + ": its metadata has no shorter_side: not a semfuse-rt graph?");
  SideRange range{std::stol(match[1].str()), std::nullopt};
  if (match[2].str() != "null") range.high = std::stol(match[2].str());
  return range;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  std::string output;
  std::vector<std::string> positional;
  for (std::size_t i = 0; i < args.size(); i++) {
    if (args[i] == "-o" && i + 1 < args.size() && output.empty()) output = args[++i];
    else positional.push_back(args[i]);
  }
  if (output.empty() || positional.size() < 3) fail("usage: fuse_onnx GRAPH.onnx A B [C ...] -o OUT");
  const std::string graph = positional[0];
  const std::vector<std::string> inputs(positional.begin() + 1, positional.end());
  for (const std::string& input : positional) {  // never write over an input
    std::error_code error;
    if (std::filesystem::equivalent(input, output, error)) fail(output + ": is an input; write the result elsewhere");
  }

  try {
    // Errors come back to this program, which says them in one line: ONNX Runtime logs nothing itself.
    Ort::Env env(ORT_LOGGING_LEVEL_FATAL, "fuse_onnx");
    Ort::Session session(env, graph.c_str(), Ort::SessionOptions());

    const std::vector<std::int64_t> shape = session.GetInputTypeInfo(0).GetTensorTypeAndShapeInfo().GetShape();
    const std::int64_t count = shape.empty() ? -1 : shape[0];
    if (count > 0 && static_cast<std::int64_t>(inputs.size()) != count) {
      fail(graph + " fuses " + std::to_string(count) + " images; got " + std::to_string(inputs.size()));
    }
    Ort::AllocatorWithDefaultOptions allocator;
    const auto terms = session.GetModelMetadata().LookupCustomMetadataMapAllocated("semfuse_rt", allocator);
    if (!terms) fail(graph + ": no semfuse_rt metadata: not a graph from semfuse-rt export");
    const SideRange sides = shorter_sides(graph, terms.get());

    std::vector<Image> images;
    for (const std::string& input : inputs) images.push_back(read_netpbm(input));
    const int width = images[0].width, height = images[0].height;
    bool grey = true, colour = true;
    for (const Image& image : images) {
      if (image.width != width || image.height != height) {
        fail("the inputs differ in size; fusion needs registered images of one size");
      }
      grey = grey && image.channels == 1;
      colour = colour && image.channels == 3;
    }
    if (!grey && !colour) fail("grey and colour inputs mixed: convert them all to grey or all to RGB");
    const std::string suffix = grey ? ".pgm" : ".ppm";
    if (std::filesystem::path(output).extension() != suffix) {
      fail(output + ": the result of " + (grey ? "grey" : "RGB") + " inputs is a " + (grey ? "PGM" : "PPM") +
           " image: name it " + suffix);
    }
    const long shorter = std::min(width, height);
    if (shorter < sides.low || (sides.high && shorter > *sides.high)) {
      const std::string most = sides.high ? " to " + std::to_string(*sides.high) : " or more";
      fail(graph + " takes images whose shorter side is " + std::to_string(sides.low) + most + " pixels; these have " +
           std::to_string(shorter) + " (export another with semfuse-rt export --size)");
    }

    // (K, H, W, 3) uint8: a grey image replicated to the three channels.
    const std::size_t plane = static_cast<std::size_t>(width) * height;
    std::vector<std::uint8_t> stack(images.size() * plane * 3);
    for (std::size_t k = 0; k < images.size(); k++) {
      for (std::size_t i = 0; i < plane; i++) {
        for (std::size_t c = 0; c < 3; c++) {
          stack[(k * plane + i) * 3 + c] = images[k].pixels[grey ? i : 3 * i + c];
        }
      }
    }
    const std::vector<std::int64_t> stack_shape{static_cast<std::int64_t>(images.size()), height, width, 3};
    const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const Ort::Value input = Ort::Value::CreateTensor<std::uint8_t>(memory, stack.data(), stack.size(),
                                                                    stack_shape.data(), stack_shape.size());
    const char* input_name = "images";
    const char* output_name = grey ? "fused_luma" : "fused";
    std::vector<Ort::Value> results;
    try {
      results = session.Run(Ort::RunOptions(), &input_name, &input, 1, &output_name, 1);
    } catch (const Ort::Exception& error) {
      // Sizes the graph does not take fail in its size check, whose name says which it takes.
      static const std::regex check(R"(size check: (.*?) \(fused)");
      std::smatch match;
      const std::string message = error.what();
      if (std::regex_search(message, match, check)) fail(graph + ": " + match[1].str());
      throw;
    }
    write_netpbm(output, width, height, grey ? 1 : 3, results[0].GetTensorData<std::uint8_t>());
  } catch (const std::exception& error) {  // ONNX Runtime's (Ort::Exception) and the standard library's
    fail(first_line(error.what()));
  }
  return 0;
}
