// Internal to coordinator/: strict readers for the FromJson() functions. Each reads one field
// of a JSON object, checking its type exactly (no silent truncation of 1.5 to 1, no negative
// number into an unsigned field), and returns Corruption naming `what` and the field otherwise.
// Not a public header of the part.
//
// Thread-safety: free functions without state.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "common/status.h"

namespace flap::coordinator::json_internal {

inline Status Bad(const std::string& what, const std::string& field, const char* expected) {
  return Status::Corruption(what + ": field '" + field + "' is missing or not " + expected);
}

// Converts one JSON value to T. `field` names it in the error.
template <typename T>
Status Convert(const nlohmann::json& v, const std::string& what, const std::string& field, T* out) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return Bad(what, field, "a string");
    *out = v.get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return Bad(what, field, "a boolean");
    *out = v.get<bool>();
  } else if constexpr (std::is_floating_point_v<T>) {
    // JSON has no NaN or infinity: Number() writes null and "inf" / "-inf" for them.
    if (v.is_null()) {
      *out = std::numeric_limits<T>::quiet_NaN();
    } else if (v.is_string() && (v == "inf" || v == "-inf")) {
      *out = v == "inf" ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity();
    } else if (v.is_number()) {
      *out = v.get<T>();
    } else {
      return Bad(what, field, "a number");
    }
  } else if constexpr (std::is_unsigned_v<T>) {
    // A non-negative integer may be held signed (json j = 3) or unsigned (parsed "3").
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0)) {
      return Bad(what, field, "a non-negative integer");
    }
    uint64_t u = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
    if (u > std::numeric_limits<T>::max()) return Bad(what, field, "an integer in range");
    *out = static_cast<T>(u);
  } else {
    static_assert(std::is_integral_v<T>, "unsupported field type");
    if (!v.is_number_integer()) return Bad(what, field, "an integer");
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        return Bad(what, field, "an integer in range");
      }
      *out = static_cast<T>(u);
    } else {
      int64_t i = v.get<int64_t>();
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) {
        return Bad(what, field, "an integer in range");
      }
      *out = static_cast<T>(i);
    }
  }
  return Status::OK();
}

// Reads object field `key` of `j` into `out`.
template <typename T>
Status Get(const nlohmann::json& j, const char* key, const std::string& what, T* out) {
  if (!j.is_object()) return Status::Corruption(what + ": expected a JSON object");
  auto it = j.find(key);
  if (it == j.end()) return Bad(what, key, "present");
  return Convert(*it, what, key, out);
}

// Reads object field `key` (an array) of `j` into `out`.
template <typename T>
Status GetArray(const nlohmann::json& j, const char* key, const std::string& what, std::vector<T>* out) {
  if (!j.is_object()) return Status::Corruption(what + ": expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return Bad(what, key, "an array");
  out->clear();
  for (size_t i = 0; i < it->size(); ++i) {
    T v{};
    FLAP_RETURN_IF_ERROR(Convert((*it)[i], what, std::string(key) + "[" + std::to_string(i) + "]", &v));
    out->push_back(std::move(v));
  }
  return Status::OK();
}

// A double as JSON, readable back by Convert(): null for NaN, "inf" / "-inf" for infinities
// (nlohmann would write null for all three).
inline nlohmann::json Number(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

}  // namespace flap::coordinator::json_internal
