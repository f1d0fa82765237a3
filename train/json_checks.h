// Checked reads of JSON values that come from files (checkpoint headers, their model metadata):
// a value of the wrong type or out of range is an error naming the field, never a conversion
// (nlohmann's get<int64_t>() on 1e300 is undefined behaviour, on 2.5 it truncates).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace equivae {

// `v` as JSON text for an error message, at most 60 characters of it.
inline std::string json_brief(const nlohmann::json& v) {
  std::string text = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// An integer in [min, max] (0 <= max); floats, strings, booleans and null are refused.
inline int64_t json_integer(const nlohmann::json& v, const std::string& field, int64_t min, int64_t max) {
  const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(max) && int64_t(v.get<uint64_t>()) >= min
                                         : v.is_number_integer() && v.get<int64_t>() >= min && v.get<int64_t>() <= max;
  if (!ok) throw std::runtime_error(fmt::format("{} is {}, expected an integer in [{}, {}]", field, json_brief(v), min, max));
  return v.get<int64_t>();
}

// Member `key` of object `j`, which must exist.
inline const nlohmann::json& json_member(const nlohmann::json& j, const std::string& object, const std::string& key) {
  if (!j.is_object()) throw std::runtime_error(fmt::format("{} is {}, expected an object", object, json_brief(j)));
  if (!j.contains(key)) throw std::runtime_error(fmt::format("{} has no \"{}\"", object, key));
  return j.at(key);
}

}  // namespace equivae
