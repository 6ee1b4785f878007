//! The site (`target/site`) is embedded into the binary (src/site.rs) together with the
//! fingerprints `cargo leptos build` wrote to `hash.txt` beside the binary. cargo-leptos builds
//! the front end before the server when file names are hashed, so both are complete here.
//! Cargo scans a folder named by `rerun-if-changed` for changes, so a new site build (new
//! hashed names) makes the server embed it again.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let site = manifest.join("../target/site");
    println!("cargo:rerun-if-changed={}", site.display());
    // OUT_DIR is <target>/<profile>/build/server-<hash>/out: hash.txt sits in <profile>.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let profile_dir = out.ancestors().nth(3).map(Path::to_path_buf);
    let hashes = profile_dir.map(|dir| dir.join("hash.txt"));
    let text = match &hashes {
        Some(file) => {
            println!("cargo:rerun-if-changed={}", file.display());
            std::fs::read_to_string(file).unwrap_or_default()
        }
        None => String::new(),
    };
    // One line per file kind (`js: …`, `wasm: …`, `css: …`), joined with ';' for one variable.
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    println!("cargo:rustc-env=STEPGATE_SITE_HASHES={}", joined.join(";"));
}
