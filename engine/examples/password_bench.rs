//! Password hashing cost on this machine: `cargo run --release -p engine --example password_bench`.
//!
//! Prints (1) the time of one argon2id hash and one verify, (2) that an unknown user's check
//! (against the dummy hash) takes as long as a known user's wrong password, and (3) sign-in
//! verifications per second with the engine's cap on concurrent hashes, so a burst queues
//! instead of starving the runtime.

use std::time::{Duration, Instant};

use engine::sign_in::password::PasswordHasher;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = 20;
    let hasher = PasswordHasher::for_this_machine();
    let stored = hasher.hash("correct horse battery staple").await.unwrap();

    let mut hash_times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        hasher.hash("correct horse battery staple").await.unwrap();
        hash_times.push(t.elapsed());
    }
    let mut known_wrong = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        assert!(!hasher
            .verify("wrong password", Some(&stored))
            .await
            .unwrap());
        known_wrong.push(t.elapsed());
        let t = Instant::now();
        assert!(!hasher.verify("wrong password", None).await.unwrap());
        unknown.push(t.elapsed());
    }
    println!("argon2id m=19 MiB t=2 p=1, {rounds} rounds, medians:");
    println!(
        "  hash                         {:>8.1} ms",
        median(hash_times).as_secs_f64() * 1e3
    );
    println!(
        "  verify, known user, wrong pw {:>8.1} ms",
        median(known_wrong).as_secs_f64() * 1e3
    );
    println!(
        "  verify, unknown user (dummy) {:>8.1} ms",
        median(unknown).as_secs_f64() * 1e3
    );

    let burst = 64;
    let t = Instant::now();
    let tasks: Vec<_> = (0..burst)
        .map(|_| {
            let (hasher, stored) = (hasher.clone(), stored.clone());
            tokio::spawn(async move { hasher.verify("wrong password", Some(&stored)).await })
        })
        .collect();
    // While the burst runs, the runtime must stay responsive: time a 1 ms timer meanwhile.
    let tick = Instant::now();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let timer_lag = tick.elapsed();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = t.elapsed();
    println!(
        "  burst of {burst} verifies: {:.2} s, {:.1} verifies/s; a 1 ms timer during it fired after {:.1} ms",
        elapsed.as_secs_f64(),
        f64::from(burst) / elapsed.as_secs_f64(),
        timer_lag.as_secs_f64() * 1e3
    );
}
