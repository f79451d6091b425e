#include "sim_files.h"

#include <algorithm>

namespace predictd::sim {

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t seed_of(const OutputFile& f) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over id and index
  for (unsigned char c : f.id) h = (h ^ c) * 1099511628211ULL;
  return splitmix(h ^ static_cast<uint64_t>(f.index));
}

void le32(std::string& s, std::size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// The leading bytes that make `file` and image viewers recognise the type.
std::string header_of(const OutputFile& f) {
  if (f.ext == "png") return std::string("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  if (f.ext == "webp") {
    std::string h = "RIFF....WEBPVP8 ";
    le32(h, 4, static_cast<uint32_t>(f.size - 8));
    return h;
  }
  if (f.ext == "mp4") return std::string("\0\0\0\x20" "ftypisom\0\0\x02\0isomiso2avc1mp41", 32);
  if (f.ext == "jpg") return std::string("\xff\xd8\xff\xe0\0\x10JFIF\0", 11);
  return {};
}

// SVG is text: an opening tag, rectangles, the closing tag; sized to `size`.
std::string svg_text(const OutputFile& f) {
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 1024 1024\">\n";
  const std::string end = "</svg>\n";
  uint64_t r = seed_of(f);
  while (s.size() + end.size() < f.size) {
    r = splitmix(r);
    std::string rect = "<rect x=\"" + std::to_string(r % 1000) + "\" y=\"" + std::to_string((r >> 10) % 1000) +
                       "\" width=\"24\" height=\"24\" fill=\"#" + std::to_string(100000 + (r >> 20) % 900000) +
                       "\"/>\n";
    s += rect;
  }
  s += end;
  return s;
}

}  // namespace

std::optional<OutputFile> output_file(std::string_view path, uint64_t video_bytes) {
  constexpr std::string_view kRoot = "/xezq/";
  if (!path.starts_with(kRoot)) return std::nullopt;
  path.remove_prefix(kRoot.size());
  const auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  OutputFile f;
  f.id = std::string(path.substr(0, slash));
  auto name = path.substr(slash + 1);
  if (!name.starts_with("out-")) return std::nullopt;
  name.remove_prefix(4);
  const auto dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 2) return std::nullopt;
  for (char c : name.substr(0, dot))
    if (c < '0' || c > '9') return std::nullopt;
  f.index = std::stoi(std::string(name.substr(0, dot)));
  f.ext = std::string(name.substr(dot + 1));
  const uint64_t r = seed_of(f);
  if (f.ext == "mp4")
    f.size = std::max<uint64_t>(video_bytes, 64);
  else if (f.ext == "svg")
    f.size = 2048 + r % (16 * 1024);
  else if (f.ext == "png")
    f.size = 200 * 1024 + r % (800 * 1024);
  else if (f.ext == "webp" || f.ext == "jpg")
    f.size = 40 * 1024 + r % (200 * 1024);
  else
    return std::nullopt;
  if (f.ext == "svg") f.size = svg_text(f).size();
  return f;
}

std::string_view content_type(std::string_view ext) {
  if (ext == "png") return "image/png";
  if (ext == "webp") return "image/webp";
  if (ext == "mp4") return "video/mp4";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "jpg") return "image/jpeg";
  return "application/octet-stream";
}

std::string output_bytes(const OutputFile& f, uint64_t offset, std::size_t n) {
  if (offset >= f.size) return {};
  n = static_cast<std::size_t>(std::min<uint64_t>(n, f.size - offset));
  if (f.ext == "svg") return svg_text(f).substr(static_cast<std::size_t>(offset), n);
  std::string out(n, '\0');
  const uint64_t seed = seed_of(f);
  // Each 8-byte block is a function of its position alone: any slice can be made on its own.
  for (std::size_t i = 0; i < n;) {
    const uint64_t pos = offset + i;
    const uint64_t block = splitmix(seed ^ (pos / 8));
    const std::size_t from = static_cast<std::size_t>(pos % 8);
    const std::size_t take = std::min<std::size_t>(8 - from, n - i);
    for (std::size_t k = 0; k < take; ++k) out[i + k] = static_cast<char>((block >> (8 * (from + k))) & 0xff);
    i += take;
  }
  const std::string head = header_of(f);
  for (std::size_t k = 0; k < head.size(); ++k)
    if (k >= offset && k < offset + n) out[k - offset] = head[k];
  return out;
}

}  // namespace predictd::sim
