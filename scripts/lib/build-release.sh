# Sourced by the benches that run the release server (bench-load.sh, bench-memory.sh,
# crash-soak.sh): rebuilds the server and site only when they are missing or older than their
# sources (a release build takes minutes), then the sandbox and the load tools.
build_release_rig() {
  if [ ! -x target/release/stepgate ] || [ ! -d target/site ] || [ -n "$(find app engine server frontend style public Cargo.toml Cargo.lock -newer target/release/stepgate -type f -print -quit)" ]; then
    bash scripts/setup.sh
    cargo leptos build --release --precompress
  fi
  cargo build --release -q -p sandbox -p loadgen
}
