//! Every `unsafe` of this crate: calls into src/shim.cc, which wraps one owned `re2::RE2`.

use std::ffi::{c_char, c_int, c_void};
use std::ptr::NonNull;

unsafe extern "C" {
    fn lanyard_re2_new(pattern: *const c_char, len: usize) -> *mut c_void;
    fn lanyard_re2_free(re: *mut c_void);
    fn lanyard_re2_ok(re: *const c_void) -> c_int;
    fn lanyard_re2_error(re: *const c_void, len: *mut usize) -> *const c_char;
    fn lanyard_re2_program_size(re: *const c_void) -> c_int;
    fn lanyard_re2_full_match(re: *const c_void, text: *const c_char, len: usize) -> c_int;
    fn lanyard_re2_partial_match(re: *const c_void, text: *const c_char, len: usize) -> c_int;
    fn lanyard_re2_global_replace(
        re: *const c_void,
        text: *const c_char,
        len: usize,
        rewrite: *const c_char,
        rewrite_len: usize,
        count: *mut c_int,
    ) -> *mut c_void;
    fn lanyard_re2_string_data(s: *const c_void, len: *mut usize) -> *const c_char;
    fn lanyard_re2_string_free(s: *mut c_void);
}

/// An owned `re2::RE2`, compiled or holding its compile error.
pub(crate) struct Re2(NonNull<c_void>);

// SAFETY: an RE2 object is immutable once constructed, and RE2 documents its const methods
// (matching, ProgramSize, error) as safe to call from several threads at once; its lazily
// built DFA caches are guarded by RE2's own mutexes.
unsafe impl Send for Re2 {}
// SAFETY: as above; `&Re2` only reaches const methods.
unsafe impl Sync for Re2 {}

impl Re2 {
    /// `None` only if C++ could not allocate.
    pub(crate) fn new(pattern: &[u8]) -> Option<Self> {
        // SAFETY: the pointer and length describe `pattern`, alive for the call; RE2 copies
        // the pattern. The shim catches every exception and returns null instead.
        let re = unsafe { lanyard_re2_new(pattern.as_ptr().cast(), pattern.len()) };
        NonNull::new(re).map(Re2)
    }

    pub(crate) fn ok(&self) -> bool {
        // SAFETY: `self.0` is a live RE2 created by `lanyard_re2_new` and not yet freed.
        unsafe { lanyard_re2_ok(self.0.as_ptr()) == 1 }
    }

    pub(crate) fn error(&self) -> String {
        let mut len = 0usize;
        // SAFETY: `self.0` is live; the shim writes the length through the valid `&mut len`
        // and returns a pointer to `len` bytes owned by the RE2 object, which outlives the copy
        // made below.
        let bytes = unsafe {
            let ptr = lanyard_re2_error(self.0.as_ptr(), &mut len);
            if ptr.is_null() {
                return String::new();
            }
            std::slice::from_raw_parts(ptr.cast::<u8>(), len)
        };
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// RE2's ProgramSize: -1 if the pattern did not compile.
    pub(crate) fn program_size(&self) -> i32 {
        // SAFETY: `self.0` is live.
        unsafe { lanyard_re2_program_size(self.0.as_ptr()) }
    }

    /// `Some(matched)`, or `None` if RE2 threw (out of memory).
    pub(crate) fn full_match(&self, text: &[u8]) -> Option<bool> {
        // SAFETY: `self.0` is live; the pointer and length describe `text`, alive for the call
        // and only read.
        let r =
            unsafe { lanyard_re2_full_match(self.0.as_ptr(), text.as_ptr().cast(), text.len()) };
        (r >= 0).then_some(r == 1)
    }

    pub(crate) fn partial_match(&self, text: &[u8]) -> Option<bool> {
        // SAFETY: as in `full_match`.
        let r =
            unsafe { lanyard_re2_partial_match(self.0.as_ptr(), text.as_ptr().cast(), text.len()) };
        (r >= 0).then_some(r == 1)
    }
}

impl Re2 {
    /// RE2::GlobalReplace on a copy of `text`: the result and the number of replacements, or
    /// `None` if RE2 threw (out of memory).
    pub(crate) fn global_replace(&self, text: &[u8], rewrite: &[u8]) -> Option<(Vec<u8>, i32)> {
        let mut count: c_int = 0;
        // SAFETY: `self.0` is live; both pointer and length pairs describe slices alive for the
        // call and only read; `count` is a valid `&mut`. The shim returns null or an owned
        // std::string freed below, exactly once.
        let out = unsafe {
            lanyard_re2_global_replace(
                self.0.as_ptr(),
                text.as_ptr().cast(),
                text.len(),
                rewrite.as_ptr().cast(),
                rewrite.len(),
                &mut count,
            )
        };
        if out.is_null() {
            return None;
        }
        let mut len = 0usize;
        // SAFETY: `out` is the live std::string returned above; its `len` bytes stay valid until
        // it is freed, after the copy.
        let bytes = unsafe {
            let ptr = lanyard_re2_string_data(out, &mut len);
            let copy = std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec();
            lanyard_re2_string_free(out);
            copy
        };
        Some((bytes, count))
    }
}

impl Drop for Re2 {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `lanyard_re2_new` and is freed exactly once, here.
        unsafe { lanyard_re2_free(self.0.as_ptr()) }
    }
}
