#include "row_check.h"

#include "config.h"
#include "replicate.h"

namespace predictd {

const ModelEntry* resolve_model(const JobRow& row, const Catalog& models) {
  if (row.version && !row.version->empty()) {
    const ModelEntry* e = models.find_version(*row.version);
    if (e && row.model && !row.model->empty() && *row.model != e->name) return nullptr;
    return e;
  }
  if (row.model && !row.model->empty()) return models.find_model(*row.model);
  return nullptr;
}

std::string model_error(const JobRow& row, const Catalog& models) {
  if (row.version && !row.version->empty()) {
    const ModelEntry* e = models.find_version(*row.version);
    if (!e) return "version " + *row.version + " is not in the catalog";
    return "model " + *row.model + " does not match version " + *row.version + " (" + e->name + ")";
  }
  if (row.model && !row.model->empty()) return "model " + *row.model + " is not in the catalog";
  return "neither model nor version is set";
}

std::optional<std::string> check_row(const JobRow& row, const Config& config) {
  if (static_cast<int64_t>(row.input.size()) > config.jobs.max_input_bytes)
    return "input is " + std::to_string(row.input.size()) + " bytes, over jobs.max_input_bytes (" +
           std::to_string(config.jobs.max_input_bytes) + ")";
  if (auto err = check_input_object(row.input)) return err;
  if (!resolve_model(row, config.models)) return model_error(row, config.models);
  if (row.timeout_s && (*row.timeout_s <= 0 || *row.timeout_s > kMaxTimeoutS))
    return "timeout_s " + std::to_string(*row.timeout_s) + " is outside 1.." + std::to_string(kMaxTimeoutS);
  return std::nullopt;
}

}  // namespace predictd
