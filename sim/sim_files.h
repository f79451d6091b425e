// The bytes behind the simulator's output links: deterministic per prediction
// id and output index, with the real file signature of their type, generated
// piece by piece so that a 50 MB video is never whole in memory (the tests
// run the simulator in the process whose RSS they measure).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace predictd::sim {

struct OutputFile {
  std::string id;  // prediction id
  int index = 0;
  std::string ext;  // webp, png, mp4, svg
  uint64_t size = 0;
};

// The file for "/xezq/{id}/out-{index}.{ext}": sizes from a few KB (svg) to
// hundreds of KB (images); mp4 files are `video_bytes` long. nullopt when the
// path is not an output link.
std::optional<OutputFile> output_file(std::string_view path, uint64_t video_bytes);
std::string_view content_type(std::string_view ext);
// Bytes [offset, offset + n) of the file.
std::string output_bytes(const OutputFile& f, uint64_t offset, std::size_t n);

}  // namespace predictd::sim
