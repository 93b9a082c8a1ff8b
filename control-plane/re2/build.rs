//! Compiles src/shim.cc against Debian's libre2-dev and links RE2 statically, so binaries do
//! not need libre2 at run time.
//!
//! The headers are found through pkg-config (`re2`), else in /usr/include or /usr/local/include.
//! When they are missing and this runs as root with apt-get on the PATH, it installs
//! `libre2-dev` itself (README promises a build on a machine with only the Rust toolchain);
//! `LANYARD_RE2_NO_INSTALL=1` turns that off. Otherwise the build fails with one message that
//! says what to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const PACKAGE: &str = "libre2-dev";

struct Re2 {
    include: PathBuf,
    lib: PathBuf,
}

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/shim.cc");
    println!("cargo:rerun-if-env-changed=LANYARD_RE2_NO_INSTALL");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");

    let re2 = match find().or_else(install) {
        Some(re2) => re2,
        None => {
            let why = if env::var_os("LANYARD_RE2_NO_INSTALL").is_some() {
                "LANYARD_RE2_NO_INSTALL is set"
            } else {
                "this build cannot install it (it installs it only as root with apt-get)"
            };
            eprintln!(
                "error: lanyard-re2 needs RE2's headers and static library (re2/re2.h, libre2.a) \
                 and did not find both through pkg-config or in /usr/include, and {why}. \
                 Install them: `apt-get install libre2-dev` on Debian or Ubuntu \
                 (or your system's RE2 development package), then build again."
            );
            return ExitCode::FAILURE;
        }
    };

    // Build again if the package is removed or upgraded.
    println!(
        "cargo:rerun-if-changed={}",
        re2.include.join("re2/re2.h").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        re2.lib.join("libre2.a").display()
    );

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .cpp_link_stdlib(None)
        .include(&re2.include)
        .file("src/shim.cc")
        .warnings(true)
        .compile("lanyard_re2_shim");
    // After the shim, which needs them: RE2 statically, then the C++ runtime it needs.
    println!("cargo:rustc-link-search=native={}", re2.lib.display());
    println!("cargo:rustc-link-lib=static=re2");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=pthread");
    ExitCode::SUCCESS
}

/// RE2's include directory and the directory holding `libre2.a`, if both are there.
fn find() -> Option<Re2> {
    let mut includes: Vec<PathBuf> = pkg_config(&["--cflags-only-I", "re2"])
        .map(|flags| {
            flags
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("-I"))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    includes.extend(["/usr/include", "/usr/local/include"].map(PathBuf::from));
    let include = includes
        .into_iter()
        .find(|dir| dir.join("re2/re2.h").is_file())?;

    let mut libs: Vec<PathBuf> = pkg_config(&["--variable=libdir", "re2"])
        .map(|dir| vec![PathBuf::from(dir.trim())])
        .unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    libs.extend([
        PathBuf::from(format!("/usr/lib/{arch}-linux-gnu")),
        PathBuf::from("/usr/lib"),
        PathBuf::from("/usr/local/lib"),
    ]);
    let lib = libs
        .into_iter()
        .find(|dir| dir.join("libre2.a").is_file())?;
    Some(Re2 { include, lib })
}

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// Installs libre2-dev with apt-get when allowed and possible, then looks again.
fn install() -> Option<Re2> {
    if env::var_os("LANYARD_RE2_NO_INSTALL").is_some() || !is_root() || !has("apt-get") {
        return None;
    }
    println!("cargo:warning=lanyard-re2: RE2 headers not found; installing {PACKAGE} with apt-get");
    if !apt_get(&["install", "-y", "-q", PACKAGE]) {
        println!("cargo:warning=lanyard-re2: apt-get install failed; running apt-get update first");
        if !apt_get(&["update", "-q"]) || !apt_get(&["install", "-y", "-q", PACKAGE]) {
            println!("cargo:warning=lanyard-re2: could not install {PACKAGE}");
            return None;
        }
    }
    println!("cargo:warning=lanyard-re2: installed {PACKAGE}");
    find()
}

fn apt_get(args: &[&str]) -> bool {
    // apt-get's output goes to the build log (stderr), not to cargo's directives (stdout).
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

fn has(program: &str) -> bool {
    env::var_os("PATH").is_some_and(|paths| {
        env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}
