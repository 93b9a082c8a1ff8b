// The C ABI Lanyard calls RE2 through. Every function catches what C++ may throw (only
// std::bad_alloc in practice), so no exception crosses into Rust.
#include <re2/re2.h>

#include <cstddef>
#include <new>
#include <string>

extern "C" {

// Compiles `pattern` (`len` bytes, NUL bytes allowed) with the options Envoy uses
// (RE2::Quiet: UTF-8, leftmost-first, no logging). Returns null only when out of memory;
// otherwise the caller checks lanyard_re2_ok and frees the object with lanyard_re2_free.
void* lanyard_re2_new(const char* pattern, size_t len) {
  try {
    return new re2::RE2(re2::StringPiece(pattern, len), re2::RE2::Quiet);
  } catch (...) {
    return nullptr;
  }
}

void lanyard_re2_free(void* re) { delete static_cast<re2::RE2*>(re); }

int lanyard_re2_ok(const void* re) { return static_cast<const re2::RE2*>(re)->ok() ? 1 : 0; }

// RE2's error text; the bytes live as long as `re`.
const char* lanyard_re2_error(const void* re, size_t* len) {
  const std::string& error = static_cast<const re2::RE2*>(re)->error();
  *len = error.size();
  return error.data();
}

int lanyard_re2_program_size(const void* re) {
  return static_cast<const re2::RE2*>(re)->ProgramSize();
}

// 1 on a match, 0 on none, -1 if RE2 threw.
int lanyard_re2_full_match(const void* re, const char* text, size_t len) {
  try {
    return re2::RE2::FullMatch(re2::StringPiece(text, len), *static_cast<const re2::RE2*>(re)) ? 1
                                                                                               : 0;
  } catch (...) {
    return -1;
  }
}

int lanyard_re2_partial_match(const void* re, const char* text, size_t len) {
  try {
    return re2::RE2::PartialMatch(re2::StringPiece(text, len), *static_cast<const re2::RE2*>(re))
               ? 1
               : 0;
  } catch (...) {
    return -1;
  }
}

// RE2::GlobalReplace on a copy of `text` with the rewrite string `rewrite` (`\0`-`\9` name
// groups, `\\` is a backslash). Returns the result as an owned std::string (read it with
// lanyard_re2_string_data, free it with lanyard_re2_string_free) and writes the number of
// replacements to *count; null if RE2 threw.
void* lanyard_re2_global_replace(const void* re, const char* text, size_t len, const char* rewrite,
                                 size_t rewrite_len, int* count) {
  try {
    std::string* out = new std::string(text, len);
    *count = re2::RE2::GlobalReplace(out, *static_cast<const re2::RE2*>(re),
                                     re2::StringPiece(rewrite, rewrite_len));
    return out;
  } catch (...) {
    return nullptr;
  }
}

const char* lanyard_re2_string_data(const void* s, size_t* len) {
  const std::string* str = static_cast<const std::string*>(s);
  *len = str->size();
  return str->data();
}

void lanyard_re2_string_free(void* s) { delete static_cast<std::string*>(s); }

}  // extern "C"
