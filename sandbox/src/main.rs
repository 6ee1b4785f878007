//! Simulated third-party services for the demo and the end-to-end tests. Empty for now: the
//! TOTP provider, B2C tenant, Librus and Mi account simulators will live here.

fn main() {
    println!("stepgate sandbox: no simulated providers yet");
}
