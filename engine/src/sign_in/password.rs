//! Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1).
//!
//! One hash costs ~15–35 ms of CPU and 19 MiB of memory, so hashing runs on a few threads of its
//! own (one per core), fed by a queue: a burst of sign-ins queues here instead of starving the
//! async runtime or exhausting memory, and a request that waits too long gets `server_busy`.
//! A hashing thread takes the next hash from the queue itself as soon as one is done, so under
//! load the cores never sit idle while a finished hash's task is scheduled to hand its slot on
//! (what a semaphore in front of tokio's blocking pool cost: about a tenth of the sign-in rate).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::base::metrics;
use crate::ErrorCode;

/// OWASP Password Storage Cheat Sheet, second argon2id option.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// How long a request waits for a hashing slot before it is told the server is busy, unless
/// the engine sets another wait. Long enough for a queue of a thousand sign-ins at once on two
/// cores (about 60 checks a second): a slow answer beats a refusal the user must retry.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(60);

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &[u8]) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password, &salt)
        .expect("argon2 hashing cannot fail with valid parameters")
        .to_string()
}

fn verify_now(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // The parameters come from the stored string, so older hashes keep verifying.
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    /// The hashing threads' queue; they end when the last clone of the hasher is dropped.
    jobs: mpsc::Sender<Job>,
    #[cfg(test)]
    threads: usize,
    /// Verified against when the user is unknown, so both cases take the same time.
    dummy_hash: Arc<str>,
    /// Password checks run so far (tests use it to prove throttled tries cost no hashing).
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// See [`DEFAULT_QUEUE_WAIT`].
    queue_wait: Duration,
}

/// A hash waiting in the queue: whoever moves it out of `QUEUED` first (a hashing thread
/// starting it, or its caller giving up after the queue wait) decides its fate.
struct Job {
    ticket: Arc<Ticket>,
    work: Box<dyn FnOnce() + Send>,
}

struct Ticket {
    state: AtomicU8,
    /// Counted in the queue's depth until the job starts or is given up.
    queued: Mutex<Option<metrics::HashQueued>>,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const GIVEN_UP: u8 = 2;

impl Ticket {
    /// Moves the job out of the queue to `to`; false when someone else did first.
    fn leave_queue(&self, to: u8) -> Option<metrics::HashQueued> {
        self.state
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.queued.lock().ok()?.take()
    }
}

/// One hashing thread: takes the next job as soon as it is free, until the queue closes.
fn hashing_thread(jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let next = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        // Given up by its caller: skipped. Dropping the queue's count records the wait.
        let Some(queued) = job.ticket.leave_queue(RUNNING) else {
            continue;
        };
        drop(queued);
        // A panicking hash drops its answer's sender (the caller reports it); the thread goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.work));
    }
}

impl PasswordHasher {
    /// `max_in_flight` hashes run at once (one thread each); more wait their turn.
    pub fn new(max_in_flight: usize) -> Self {
        let threads = max_in_flight.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("stepgate-hash-{n}"))
                .spawn(move || hashing_thread(queue))
                .expect("a password hashing thread starts");
        }
        Self {
            jobs,
            #[cfg(test)]
            threads,
            dummy_hash: hash_now(b"stepgate dummy password for unknown users").into(),
            checks: Arc::default(),
            queue_wait: DEFAULT_QUEUE_WAIT,
        }
    }

    /// The same hasher with another wait for a slot before `server_busy`.
    pub fn with_queue_wait(mut self, queue_wait: Duration) -> Self {
        self.queue_wait = queue_wait;
        self
    }

    /// Keeps every hashing thread busy until the answer is dropped (tests make the server busy).
    #[cfg(test)]
    pub(crate) async fn occupy_all(&self) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (started, mut all_started) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..self.threads {
            let (held, started) = (held.clone(), started.clone());
            let answer = self
                .submit(move || {
                    let _ = started.send(());
                    // Returns once `release` is dropped.
                    let _ = held.lock().map(|held| held.recv());
                })
                .expect("the hashing threads run");
            drop(answer);
        }
        for _ in 0..self.threads {
            all_started.recv().await;
        }
        release
    }

    /// A sensible bound for this machine: one hash per core, at least two.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self::new(cores.max(2))
    }

    pub async fn hash(&self, password: &str) -> Result<String, ErrorCode> {
        let password = password.as_bytes().to_vec();
        self.run(move || hash_now(&password)).await
    }

    /// Checks `password` against `stored`; with no stored hash (unknown user) it checks a dummy
    /// hash and answers `false`, taking the same time as a real check.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, ErrorCode> {
        let password = password.as_bytes().to_vec();
        let known = stored.is_some();
        let phc: String = stored
            .map(str::to_owned)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let matches = self.run(move || verify_now(&password, &phc)).await?;
        Ok(known && matches)
    }

    /// How many password checks this hasher has run.
    pub fn checks_run(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `work` for a hashing thread: its ticket and where its answer will come.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(Arc<Ticket>, tokio::sync::oneshot::Receiver<T>), ErrorCode> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let ticket = Arc::new(Ticket {
            state: AtomicU8::new(QUEUED),
            queued: Mutex::new(Some(metrics::HashQueued::enter())),
        });
        let job = Job {
            ticket: ticket.clone(),
            work: Box::new(move || {
                let _ = answer.send(work());
            }),
        };
        self.jobs.send(job).map_err(|_| {
            tracing::error!("the password hashing threads have ended");
            ErrorCode::Unknown
        })?;
        Ok((ticket, answered))
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ErrorCode> {
        let (ticket, mut answered) = self.submit(work)?;
        let failed = |_| {
            tracing::error!("password hashing task failed");
            ErrorCode::Unknown
        };
        match tokio::time::timeout(self.queue_wait, &mut answered).await {
            Ok(answer) => answer.map_err(failed),
            Err(_) => match ticket.leave_queue(GIVEN_UP) {
                // Still waiting for a thread: given up, and the thread will skip it.
                Some(queued) => {
                    queued.refused();
                    Err(ErrorCode::ServerBusy)
                }
                // It started meanwhile (or just now): its answer comes soon.
                None if ticket.state.load(Ordering::Acquire) == RUNNING => {
                    answered.await.map_err(failed)
                }
                None => Err(ErrorCode::ServerBusy),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_own_password_only() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse battery").await.unwrap();
        assert!(hasher
            .verify("correct horse battery", Some(&hash))
            .await
            .unwrap());
        assert!(!hasher
            .verify("correct horse batterY", Some(&hash))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_a_fresh_salt() {
        let hasher = PasswordHasher::new(2);
        let a = hasher.hash("same password").await.unwrap();
        let b = hasher.hash("same password").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash gets its own salt");
    }

    #[tokio::test]
    async fn unknown_user_is_checked_against_the_dummy_hash_and_refused() {
        let hasher = PasswordHasher::new(2);
        // Even the dummy hash's own password must not sign in an unknown user.
        let refused = hasher
            .verify("stepgate dummy password for unknown users", None)
            .await
            .unwrap();
        assert!(!refused);
    }

    #[tokio::test]
    async fn a_garbled_stored_hash_never_verifies() {
        let hasher = PasswordHasher::new(1);
        assert!(!hasher.verify("x", Some("not a phc string")).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_given_up_in_the_queue_is_busy_and_never_runs() {
        let hasher = PasswordHasher::new(1).with_queue_wait(Duration::from_millis(20));
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let release = hasher.occupy_all().await;
        let flag = ran.clone();
        let answer = hasher
            .run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .await;
        assert_eq!(answer, Err(ErrorCode::ServerBusy));
        drop(release);
        // The thread is free again: a new hash runs, and the given-up one was skipped.
        assert!(hasher.hash("after the wait").await.is_ok());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn no_more_than_the_cap_run_at_once() {
        let hasher = PasswordHasher::new(1);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (hasher, in_flight, peak) = (hasher.clone(), in_flight.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                hasher
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = in_flight.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        in_flight.fetch_sub(1, SeqCst);
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
