// Whether a claimed row can be submitted (SPEC §2). Pure functions of the row
// and the config, shared by the engine, its tests and the row fuzzer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "catalog.h"
#include "store.h"

namespace predictd {

struct Config;

inline constexpr int64_t kMaxTimeoutS = 7 * 24 * 3600;

// The catalog entry a row runs as: by version when one is given (the model,
// if also given, must be that version's), else by model. nullptr when none fits.
const ModelEntry* resolve_model(const JobRow& row, const Catalog& models);
// Why resolve_model found nothing.
std::string model_error(const JobRow& row, const Catalog& models);
// Why the row can never be submitted, or nullopt when it can.
std::optional<std::string> check_row(const JobRow& row, const Config& config);

}  // namespace predictd
