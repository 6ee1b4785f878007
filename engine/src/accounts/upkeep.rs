//! Token upkeep: connected accounts stay alive without their users. Each provider says how to
//! renew its session ([`crate::providers::Provider::renew`]: a refresh grant, Synergia's
//! `refreshToken`, a new `serviceToken` from Xiaomi's `passToken`) and when its tokens expire
//! ([`crate::providers::Provider::expires_at`]). Each account is renewed [`margin`] before that,
//! and at least every [`MAX_RENEWAL_INTERVAL`]; the due time lives in the database, so a restart
//! between "due" and "done" loses nothing.
//!
//! One account is never renewed twice at once: a worker first leases it in the database (any
//! number of workers or instances), and inside one process the callers that want an account
//! renewed now (an app reading its credentials) wait on one lock per account, so 50 of them
//! make one refresh. A refresh rotates the refresh token: the new secrets are written in the one
//! statement that also gives the lease back, right after the provider's answer.
//!
//! With Redis (several instances), the callers of all instances that want an account renewed
//! now first take a Redis lease on it (`SET NX PX`, given back by compare-and-delete): one of
//! them goes on to the database lease and the renewal, the others wait on the Redis key instead
//! of polling the database. The database lease stays what decides, and fences the write: a
//! Redis lease cannot be checked in the same atomic statement that stores the outcome (the
//! secrets are in the database), so a holder paused past its Redis lease could otherwise store
//! an outcome over a newer one. The upkeep's batch pass picks due accounts in the database and
//! leases them there in the same statement, so it needs no Redis lease; an app read that gets
//! the Redis lease while the upkeep holds the database one waits for the database lease.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::accounts::leases::{Gate, RenewalLocks};
use crate::accounts::store::AccountStore;
use crate::accounts::store::{AccountStatus, ClaimedRenewal, ConnectedAccount, RenewalOutcome};
use crate::apps::events::AccountEvent;
use crate::apps::events::AccountEvents;
use crate::base::clock::Clock;
use crate::base::metrics;
use crate::flows::upstream::Upstreams;
use crate::providers::Health;
use crate::providers::ProviderRegistry;
use crate::sign_in::users::UserId;
use crate::store::db::{Conn, WriteTurn, Writes};
use crate::ErrorCode;

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "storing a renewal failed");
    ErrorCode::Unknown
}

/// An account is renewed at least this often, whatever its tokens' lifetime (Nango's rule).
pub const MAX_RENEWAL_INTERVAL: i64 = 24 * 3600;
/// A lease runs out after this (a worker that died mid-renewal holds an account no longer).
pub const LEASE_SECONDS: i64 = 60;
/// Credentials this close to expiry are renewed before an app gets them, even if not yet due.
const READ_MARGIN: i64 = 30;
/// How many renewals run at once by default (`STEPGATE_UPKEEP_CONCURRENCY`).
pub const DEFAULT_CONCURRENCY: usize = 32;
/// The first wait after an unreachable provider; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: i64 = 30;
const MAX_BACKOFF: i64 = 3600;

/// How long before its tokens expire an account is renewed: five minutes, or half the time
/// left when that is shorter (tokens that live minutes, as in tests).
pub fn margin(now: i64, expires_at: i64) -> i64 {
    ((expires_at - now) / 2).clamp(0, 300)
}

/// When to renew next: a margin before `expires_at`, and no later than a day from `now`.
pub fn next_due(now: i64, expires_at: Option<i64>) -> i64 {
    let daily = now + MAX_RENEWAL_INTERVAL;
    match expires_at {
        Some(at) => (at - margin(now, at)).min(daily),
        None => daily,
    }
}

/// The wait after `failures` renewals in a row that could not reach the provider.
pub fn backoff(failures: u32) -> i64 {
    FIRST_BACKOFF
        .saturating_mul(1_i64 << failures.min(20))
        .min(MAX_BACKOFF)
}

/// How many renewals one engine runs at once: `total`, and at most `per_provider` of one
/// provider's, so a provider that stalls holds only its share and the others keep theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpkeepLimits {
    pub total: usize,
    pub per_provider: usize,
}

impl UpkeepLimits {
    /// `total` at once, half of them at most for one provider.
    pub fn new(total: usize) -> Self {
        let total = total.max(1);
        Self {
            total,
            per_provider: total.div_ceil(2),
        }
    }
}

impl Default for UpkeepLimits {
    fn default() -> Self {
        Self::new(DEFAULT_CONCURRENCY)
    }
}

/// Renewals: scheduled, leased across instances, backed off, and made on demand before an app
/// reads an account (see the module doc).
#[derive(Clone)]
pub struct Upkeep {
    pub(crate) accounts: AccountStore,
    pub(crate) providers: ProviderRegistry,
    pub(crate) upstreams: Upstreams,
    pub(crate) events: AccountEvents,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) renewal_locks: RenewalLocks,
    /// This process's name as a renewal lease holder (random per engine).
    pub(crate) worker_id: Arc<str>,
    pub(crate) limits: UpkeepLimits,
    /// A renewal's outcome and its audit line are one transaction of this database.
    pub(crate) writes: Writes,
    /// Outcomes waiting for the write turn: whoever gets it commits all of them at once.
    pub(crate) queued_outcomes: Arc<std::sync::Mutex<Vec<QueuedOutcome>>>,
    /// Batches stored so far (tests show that concurrent outcomes share commits).
    #[cfg(test)]
    pub(crate) batches_stored: Arc<std::sync::atomic::AtomicUsize>,
}

/// A renewal's outcome waiting to be stored (see [`Upkeep::store_renewal`]).
pub(crate) struct QueuedOutcome {
    claimed: ClaimedRenewal,
    outcome: RenewalOutcome,
    event: Option<AccountEvent>,
    stored: tokio::sync::oneshot::Sender<Result<bool, ErrorCode>>,
}

impl Upkeep {
    /// The lease holder's name for this engine (one per process).
    fn worker(&self) -> &str {
        &self.worker_id
    }

    /// When the first renewal of an account of `provider` just connected (or signed in again)
    /// with `account`'s secrets is due (stored with the account, in its transaction).
    pub(crate) fn first_renewal_due(
        &self,
        provider: &str,
        account: &crate::providers::NewAccount,
    ) -> i64 {
        let expires = self
            .providers
            .get(provider)
            .and_then(|p| p.expires_at(&account.secrets));
        next_due(self.clock.now(), expires)
    }

    /// One pass of the upkeep: leases the accounts due now and renews them, up to
    /// [`UpkeepLimits`] at once, until none is due. Returns how many it handled.
    ///
    /// Each provider's due accounts are leased in batches of its free share (when half of it
    /// is free, so a busy provider is not asked for one account at a time); a provider whose
    /// batch came back short has nothing more due in this pass.
    pub async fn run_due_renewals(&self) -> Result<usize, ErrorCode> {
        let limits = self.limits;
        let mut running = tokio::task::JoinSet::new();
        let mut provider_of: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut drained: HashSet<String> = HashSet::new();
        let providers = self.accounts.providers_due(self.clock.now()).await?;
        let mut handled = 0;
        loop {
            for provider in &providers {
                let in_flight = busy.get(provider).copied().unwrap_or(0);
                let free = limits
                    .per_provider
                    .saturating_sub(in_flight)
                    .min(limits.total.saturating_sub(running.len()));
                let batch_worth = in_flight == 0 || free >= limits.per_provider.div_ceil(2);
                if free == 0 || !batch_worth || drained.contains(provider) {
                    continue;
                }
                let now = self.clock.now();
                let claimed = self
                    .accounts
                    .claim_due_renewals(
                        now,
                        now + LEASE_SECONDS,
                        self.worker(),
                        provider,
                        free as i64,
                    )
                    .await?;
                if claimed.len() < free {
                    drained.insert(provider.clone());
                }
                for renewal in claimed {
                    let upkeep = self.clone();
                    let task = running.spawn(async move {
                        upkeep.renew_leased(&renewal).await;
                    });
                    provider_of.insert(task.id(), provider.clone());
                    *busy.entry(provider.clone()).or_default() += 1;
                    handled += 1;
                }
            }
            let finished = match running.join_next_with_id().await {
                None => break,
                Some(Ok((id, ()))) => id,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "a renewal task failed");
                    e.id()
                }
            };
            if let Some(provider) = provider_of.remove(&finished) {
                if let Some(n) = busy.get_mut(&provider) {
                    *n -= 1;
                }
            }
        }
        Ok(handled)
    }

    /// Runs [`Engine::run_due_renewals`] every `every` until the task is dropped.
    pub fn spawn_upkeep(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match engine.run_due_renewals().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(accounts = n, "renewed due accounts"),
                    Err(code) => tracing::warn!(%code, "the token upkeep pass failed"),
                }
            }
        })
    }

    /// Renews an account this worker holds the lease of, and stores the outcome.
    async fn renew_leased(&self, claimed: &ClaimedRenewal) -> RenewalOutcome {
        let account = &claimed.account;
        let outcome = self.renewal_outcome(claimed.user_id, account).await;
        let provider = self
            .providers
            .get(account.provider.as_str())
            .map_or("unknown", |p| p.name());
        metrics::renewal(
            provider,
            match &outcome {
                RenewalOutcome::Renewed { .. } => "renewed",
                RenewalOutcome::Unchanged { .. } => "unchanged",
                RenewalOutcome::Rejected => "rejected",
                RenewalOutcome::Unreachable { .. } => "unreachable",
            },
        );
        match &outcome {
            RenewalOutcome::Rejected => tracing::info!(
                account = account.id,
                provider = account.provider,
                "the provider refused to renew an account: it needs signing in again"
            ),
            RenewalOutcome::Unreachable { code, .. } => tracing::warn!(
                account = account.id,
                provider = account.provider,
                %code,
                "an account could not be renewed"
            ),
            _ => {}
        }
        let event = match &outcome {
            RenewalOutcome::Renewed { .. } => Some(AccountEvent::Renewed),
            RenewalOutcome::Unchanged { .. } => None,
            RenewalOutcome::Rejected => {
                (account.status != AccountStatus::NeedsSignIn).then_some(AccountEvent::NeedsSignIn)
            }
            RenewalOutcome::Unreachable { code, .. } => Some(AccountEvent::Unreachable(*code)),
        };
        match self.store_renewal(claimed, &outcome, event).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                account = account.id,
                "a renewal's lease ran out before it finished; its outcome was not stored"
            ),
            Err(code) => tracing::error!(account = account.id, %code, "storing a renewal failed"),
        }
        outcome
    }

    /// Stores a renewal's outcome with its audit line (and `recovered`, when it works again)
    /// in one transaction; `false` when the lease ran out and another holder's outcome stands.
    /// `needs_sign_in` is told after the commit: its webhook may carry a sign-in link, made
    /// on its own.
    ///
    /// Group commit: the outcome joins a queue, and whoever gets the write turn stores every
    /// queued outcome in one transaction (on SQLite, one durable commit for a batch of
    /// concurrent renewals, not one each; Postgres has no turn, so there outcomes commit side
    /// by side). A batch that fails is stored again one outcome per transaction, so one bad
    /// outcome fails only itself.
    async fn store_renewal(
        &self,
        claimed: &ClaimedRenewal,
        outcome: &RenewalOutcome,
        event: Option<AccountEvent>,
    ) -> Result<bool, ErrorCode> {
        let (stored, mut answer) = tokio::sync::oneshot::channel();
        self.queue_outcome(QueuedOutcome {
            claimed: claimed.clone(),
            outcome: outcome.clone(),
            event: event.clone(),
            stored,
        });
        let turn = self.writes.turn().await;
        // An earlier holder of the turn may have stored ours with its batch.
        let stored = match answer.try_recv() {
            Ok(stored) => stored,
            Err(_) => {
                let batch = self.take_queued_outcomes();
                self.store_batch(&turn, batch).await;
                drop(turn);
                answer.await.unwrap_or(Err(ErrorCode::Unknown))
            }
        };
        if let (Ok(true), Some(AccountEvent::NeedsSignIn)) = (&stored, event) {
            self.events
                .account_event(claimed.user_id, &claimed.account, AccountEvent::NeedsSignIn)
                .await;
        }
        stored
    }

    fn queue_outcome(&self, queued: QueuedOutcome) {
        if let Ok(mut queue) = self.queued_outcomes.lock() {
            queue.push(queued);
        }
    }

    fn take_queued_outcomes(&self) -> Vec<QueuedOutcome> {
        self.queued_outcomes
            .lock()
            .map(|mut queue| std::mem::take(&mut *queue))
            .unwrap_or_default()
    }

    /// Stores `batch` in one transaction (in `turn`) and answers each of its outcomes.
    async fn store_batch(&self, turn: &WriteTurn, batch: Vec<QueuedOutcome>) {
        if batch.is_empty() {
            return;
        }
        #[cfg(test)]
        self.batches_stored
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.now();
        match self.store_together(turn, &batch, now).await {
            Ok(stored) => {
                for (queued, stored) in batch.into_iter().zip(stored) {
                    let _ = queued.stored.send(Ok(stored));
                }
            }
            Err(_) if batch.len() > 1 => {
                for queued in batch {
                    let alone = self
                        .store_together(turn, std::slice::from_ref(&queued), now)
                        .await
                        .map(|stored| stored[0]);
                    let _ = queued.stored.send(alone);
                }
            }
            Err(code) => {
                for queued in batch {
                    let _ = queued.stored.send(Err(code));
                }
            }
        }
    }

    /// `outcomes` in one transaction: whether each was stored (see [`Upkeep::store_outcome_in`]).
    async fn store_together(
        &self,
        turn: &WriteTurn,
        outcomes: &[QueuedOutcome],
        now: i64,
    ) -> Result<Vec<bool>, ErrorCode> {
        let mut tx = self.writes.begin_in(turn).await.map_err(db_error)?;
        let mut stored = Vec::with_capacity(outcomes.len());
        for queued in outcomes {
            stored.push(self.store_outcome_in(&mut tx, queued, now).await?);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    /// One outcome's writes in `conn`'s transaction; `false` when its lease ran out.
    async fn store_outcome_in(
        &self,
        conn: &mut Conn,
        queued: &QueuedOutcome,
        now: i64,
    ) -> Result<bool, ErrorCode> {
        let QueuedOutcome {
            claimed,
            outcome,
            event,
            ..
        } = queued;
        let account = &claimed.account;
        if !self
            .accounts
            .finish_renewal_in(conn, claimed, self.worker(), outcome, now)
            .await?
        {
            return Ok(false);
        }
        match event {
            // Told after the commit (see `store_renewal`).
            Some(AccountEvent::NeedsSignIn) | None => {}
            Some(event) => {
                self.events
                    .record_in(conn, claimed.user_id, account, event.clone(), now)
                    .await?
            }
        }
        if let RenewalOutcome::Renewed { .. } | RenewalOutcome::Unchanged { .. } = outcome {
            self.events
                .recovered_in(conn, claimed.user_id, account, now)
                .await?;
        }
        Ok(true)
    }

    async fn renewal_outcome(&self, user_id: UserId, account: &ConnectedAccount) -> RenewalOutcome {
        let now = self.clock.now();
        let unreachable = |code: ErrorCode, failures: u32| RenewalOutcome::Unreachable {
            code,
            retry_at: now + backoff(failures),
        };
        let failures = self.accounts.renew_failures(account.id).await.unwrap_or(0);
        let Some(provider) = self.providers.get(account.provider.as_str()) else {
            return unreachable(ErrorCode::NotFound, failures);
        };
        let secrets = match self.accounts.secrets(user_id, account.id).await {
            Ok(secrets) => secrets,
            Err(code) => return unreachable(code, failures),
        };
        let mut http = self.upstreams.session().labelled(provider.name(), "renew");
        match provider.renew(&mut http, now, &secrets).await {
            Health::Accepted(Some(renewed)) => {
                let after = self.clock.now();
                RenewalOutcome::Renewed {
                    next_due: next_due(after, provider.expires_at(&renewed)),
                    secrets: renewed,
                }
            }
            Health::Accepted(None) => RenewalOutcome::Unchanged {
                next_due: next_due(now, provider.expires_at(&secrets)),
            },
            Health::Rejected => RenewalOutcome::Rejected,
            Health::Unreachable(code) => unreachable(code, failures),
        }
    }

    /// Account `account_id` and its secrets, renewed first if they are due (an app is about to
    /// use them). A read of fresh secrets takes no lock. Concurrent callers of a due account
    /// share one renewal: in this process through the account's lock, across instances through
    /// the Redis lease when there is Redis and the database lease (a caller that finds a lease
    /// taken waits until it is given back, up to the lease's length).
    pub(crate) async fn fresh_account(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(ConnectedAccount, serde_json::Value), ErrorCode> {
        self.renewed_when(user_id, account_id, |account, secrets| {
            self.renewal_wanted(account, secrets)
        })
        .await
    }

    /// Account `account_id` renewed because its provider refused the secrets renewed at
    /// `refused_renewed_at` (the API proxy's 401): renewed now, unless a renewal since then
    /// (by another request, in this or another instance) already replaced them. Concurrent
    /// refusals of one account share one renewal, as [`Upkeep::fresh_account`]'s reads do.
    pub(crate) async fn renewed_after_refusal(
        &self,
        user_id: UserId,
        account_id: i64,
        refused_renewed_at: Option<i64>,
    ) -> Result<(ConnectedAccount, serde_json::Value), ErrorCode> {
        self.renewed_when(user_id, account_id, |account, _| {
            if account.status == AccountStatus::NeedsSignIn {
                return Err(ErrorCode::NeedsSignIn);
            }
            Ok(account.renewed_at == refused_renewed_at)
        })
        .await
    }

    /// The account and its secrets, renewed first when `wanted` says so (asked again under
    /// the account's lock and after every wait, so one renewal serves every waiting caller).
    async fn renewed_when(
        &self,
        user_id: UserId,
        account_id: i64,
        wanted: impl Fn(&ConnectedAccount, &serde_json::Value) -> Result<bool, ErrorCode>,
    ) -> Result<(ConnectedAccount, serde_json::Value), ErrorCode> {
        let (account, secrets) = self.accounts.get_with_secrets(user_id, account_id).await?;
        if !wanted(&account, &secrets)? {
            return Ok((account, secrets));
        }
        let lock = self.renewal_locks.of(account_id);
        let _held = lock.lock().await;
        let deadline = self.clock.now() + LEASE_SECONDS;
        loop {
            // Again under the lock: the caller before may have renewed it meanwhile.
            let (account, secrets) = self.accounts.get_with_secrets(user_id, account_id).await?;
            if !wanted(&account, &secrets)? {
                return Ok((account, secrets));
            }
            let now = self.clock.now();
            let gate = self
                .renewal_locks
                .enter(account_id, now, now + LEASE_SECONDS)
                .await?;
            if let Gate::Busy = gate {
                // A read on this or another instance is renewing it: wait for its answer.
                while self.renewal_locks.busy(account_id).await? {
                    Self::wait_a_little(self.clock.now(), deadline).await?;
                }
                continue;
            }
            let renewed = self.renew_or_wait(user_id, account, now, deadline).await;
            self.renewal_locks.leave(account_id, gate).await;
            if let Some(answer) = renewed? {
                return answer;
            }
        }
    }

    /// Leases the account in the database and renews it (`Some` with the answer), or waits
    /// until whoever holds the database lease gives it back (`None`: look again).
    async fn renew_or_wait(
        &self,
        user_id: UserId,
        account: ConnectedAccount,
        now: i64,
        deadline: i64,
    ) -> Result<Option<Result<(ConnectedAccount, serde_json::Value), ErrorCode>>, ErrorCode> {
        let account_id = account.id;
        if self
            .accounts
            .claim_renewal(
                account_id,
                account.renew_due_at,
                now,
                now + LEASE_SECONDS,
                self.worker(),
            )
            .await?
        {
            let claimed = ClaimedRenewal { user_id, account };
            return Ok(Some(match self.renew_leased(&claimed).await {
                RenewalOutcome::Renewed { .. } | RenewalOutcome::Unchanged { .. } => {
                    self.accounts.get_with_secrets(user_id, account_id).await
                }
                RenewalOutcome::Rejected => Err(ErrorCode::NeedsSignIn),
                RenewalOutcome::Unreachable { code, .. } => Err(code),
            }));
        }
        // Another worker or instance is renewing it: wait for its answer.
        while self
            .accounts
            .renewal_under_way(account_id, self.clock.now())
            .await?
        {
            Self::wait_a_little(self.clock.now(), deadline).await?;
        }
        Ok(None)
    }

    /// A pause between two looks at a lease held by someone else; `timeout` past `deadline`.
    async fn wait_a_little(now: i64, deadline: i64) -> Result<(), ErrorCode> {
        if now > deadline {
            return Err(ErrorCode::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }

    /// Whether an app's read must renew the account first: `needs_sign_in` when it cannot be;
    /// due by the schedule (which put the margin before expiry when it was made), or about to
    /// expire whatever the schedule says.
    fn renewal_wanted(
        &self,
        account: &ConnectedAccount,
        secrets: &serde_json::Value,
    ) -> Result<bool, ErrorCode> {
        if account.status == AccountStatus::NeedsSignIn {
            return Err(ErrorCode::NeedsSignIn);
        }
        let provider = self
            .providers
            .get(account.provider.as_str())
            .ok_or(ErrorCode::NotFound)?;
        let now = self.clock.now();
        Ok(account.renew_due_at.is_some_and(|due| due <= now)
            || provider
                .expires_at(secrets)
                .is_some_and(|at| at <= now + READ_MARGIN))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sandbox::faults::Fault;
    use sandbox::flameconnect::{self as double, FlameConnectSandbox};

    use super::*;
    use crate::accounts::leases::{lease_acquire, lease_held, lease_name, lease_release};
    use crate::accounts::store::AccountStatus;
    use crate::base::clock::ManualClock;
    use crate::providers::Purpose;
    use crate::test_support::{
        connected, engine_with, input, provider_config, register_owner, OWNER,
    };
    use crate::Engine;

    /// Tokens that live ten minutes, so the first renewal is due five minutes in.
    const LIFETIME: i64 = 600;

    struct Setup {
        engine: Engine,
        clock: ManualClock,
        user: UserId,
        account: ConnectedAccount,
        sandbox: FlameConnectSandbox,
        dir: tempfile::TempDir,
    }

    async fn open(dir: &tempfile::TempDir, sandbox: &FlameConnectSandbox) -> (Engine, ManualClock) {
        engine_with(provider_config(dir.path(), &sandbox.upstreams()).await).await
    }

    /// The FlameConnect double's demo account, connected for `user`.
    async fn connect_demo(engine: &Engine, user: UserId) -> ConnectedAccount {
        connected(
            engine
                .start_flow(
                    "flameconnect",
                    Purpose::Connect { user_id: user },
                    Some(OWNER.into()),
                    &input(&[
                        ("email", double::DEMO_EMAIL),
                        ("password", double::DEMO_PASSWORD),
                    ]),
                )
                .await,
        )
    }

    /// A FlameConnect account connected at the manual clock's start.
    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = FlameConnectSandbox::spawn().await;
        sandbox.set_access_token_lifetime(Duration::from_secs(LIFETIME as u64));
        let (engine, clock) = open(&dir, &sandbox).await;
        let user = register_owner(&engine).await;
        let account = connect_demo(&engine, user).await;
        Setup {
            engine,
            clock,
            user,
            account,
            sandbox,
            dir,
        }
    }

    impl Setup {
        async fn stored(&self) -> (ConnectedAccount, serde_json::Value) {
            let accounts = self.engine.accounts();
            (
                accounts.get(self.user, self.account.id).await.unwrap(),
                accounts.secrets(self.user, self.account.id).await.unwrap(),
            )
        }

        async fn run(&self) -> usize {
            self.engine.run_due_renewals().await.unwrap()
        }
    }

    /// An engine on `dir`'s database renewing up to `limits` at once.
    async fn open_with_limits(
        dir: &tempfile::TempDir,
        sandbox: &FlameConnectSandbox,
        limits: UpkeepLimits,
    ) -> (Engine, ManualClock) {
        let mut config = provider_config(dir.path(), &sandbox.upstreams()).await;
        config.upkeep_limits = limits;
        engine_with(config).await
    }

    /// `n` FlameConnect accounts, each of a user of its own, connected at the clock's start.
    async fn connect_many(engine: &Engine, n: usize) {
        for i in 0..n {
            let user = engine
                .register(
                    &format!("owner{i}@example.org"),
                    "password-1-quiet-harbor",
                    "password-1-quiet-harbor",
                )
                .await
                .unwrap()
                .id;
            connect_demo(engine, user).await;
        }
    }

    /// Renewals run side by side, never more than the limit at once, nor more than a
    /// provider's share of it: the double sees exactly that many requests in flight.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn renewals_run_at_once_up_to_the_limit_and_the_providers_share() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = FlameConnectSandbox::spawn().await;
        sandbox.set_access_token_lifetime(Duration::from_secs(LIFETIME as u64));
        let halves = UpkeepLimits::new(6);
        assert_eq!(halves.per_provider, 3);
        let (engine, clock) = open_with_limits(&dir, &sandbox, halves).await;
        connect_many(&engine, 12).await;
        sandbox.set_latency(Duration::from_millis(100));
        sandbox.take_max_in_flight();

        clock.advance(LIFETIME / 2);
        assert_eq!(engine.run_due_renewals().await.unwrap(), 12);
        assert_eq!(sandbox.refreshes(), 12);
        assert_eq!(
            sandbox.take_max_in_flight(),
            3,
            "one provider's share: half of 6"
        );

        // All of the limit for one provider: as many at once as the limit, no more.
        engine.pool().close().await;
        let whole = UpkeepLimits {
            total: 4,
            per_provider: 4,
        };
        let (engine, clock) = open_with_limits(&dir, &sandbox, whole).await;
        clock.advance(LIFETIME);
        assert_eq!(engine.run_due_renewals().await.unwrap(), 12);
        assert_eq!(sandbox.refreshes(), 24);
        assert_eq!(
            sandbox.take_max_in_flight(),
            4,
            "the limit, reached and kept"
        );
    }

    /// Two instances renewing the same due accounts at once: each account is renewed once
    /// (one refresh grant each), shared between them, each instance within its limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_renew_each_due_account_once() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = FlameConnectSandbox::spawn().await;
        sandbox.set_access_token_lifetime(Duration::from_secs(LIFETIME as u64));
        let limits = UpkeepLimits::new(8);
        let (first, first_clock) = open_with_limits(&dir, &sandbox, limits).await;
        connect_many(&first, 30).await;
        let (second, second_clock) = open_with_limits(&dir, &sandbox, limits).await;
        sandbox.set_latency(Duration::from_millis(50));
        sandbox.take_max_in_flight();

        first_clock.advance(LIFETIME / 2);
        second_clock.advance(LIFETIME / 2);
        let (a, b) = tokio::join!(first.run_due_renewals(), second.run_due_renewals());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a + b, 30, "each due account handled once: {a} + {b}");
        assert_eq!(sandbox.refreshes(), 30, "one refresh grant per account");
        assert!(sandbox.take_max_in_flight() <= 2 * limits.per_provider);
        assert_eq!(first.run_due_renewals().await.unwrap(), 0);
        assert_eq!(second.run_due_renewals().await.unwrap(), 0);
    }

    /// Renewals that finish together share commits on SQLite (group commit), and an outcome whose
    /// writes fail (a fault injected on one account's audit line) fails alone: the others in
    /// its batch are stored, it stays due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn outcomes_finishing_together_share_commits_and_a_failing_one_fails_alone() {
        use crate::store::db::{dialect, Dialect};
        let dir = tempfile::tempdir().unwrap();
        let sandbox = FlameConnectSandbox::spawn().await;
        sandbox.set_access_token_lifetime(Duration::from_secs(LIFETIME as u64));
        let limits = UpkeepLimits {
            total: 12,
            per_provider: 12,
        };
        let (engine, clock) = open_with_limits(&dir, &sandbox, limits).await;
        connect_many(&engine, 12).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM connected_accounts ORDER BY id")
            .fetch_all(engine.pool())
            .await
            .unwrap();
        let faulty = ids[5];
        let statements = match dialect(engine.pool()) {
            Dialect::Sqlite => vec![format!(
                "CREATE TRIGGER injected_fault BEFORE INSERT ON account_audit
                 WHEN NEW.account_id = {faulty} AND NEW.event = 'renewed'
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )],
            Dialect::Postgres => vec![
                format!(
                    "CREATE FUNCTION injected_fault() RETURNS trigger AS $$
                     BEGIN IF NEW.account_id = {faulty} AND NEW.event = 'renewed' THEN
                     RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                ),
                "CREATE TRIGGER injected_fault BEFORE INSERT ON account_audit
                 FOR EACH ROW EXECUTE FUNCTION injected_fault()"
                    .to_owned(),
            ],
        };
        for statement in statements {
            sqlx::query(&statement)
                .execute(engine.pool())
                .await
                .unwrap();
        }
        // Every refresh answers after the same 50 ms, so the outcomes arrive together.
        sandbox.set_latency(Duration::from_millis(50));
        let before = engine
            .upkeep
            .batches_stored
            .load(std::sync::atomic::Ordering::SeqCst);

        clock.advance(LIFETIME / 2);
        assert_eq!(engine.run_due_renewals().await.unwrap(), 12);
        let batches = engine
            .upkeep
            .batches_stored
            .load(std::sync::atomic::Ordering::SeqCst)
            - before;
        // On Postgres each outcome commits in parallel, in its own transaction (its WAL flush
        // groups concurrent commits by itself); SQLite's single writer is what batching helps.
        if dialect(engine.pool()) == Dialect::Sqlite {
            assert!(
                batches < 12,
                "12 outcomes in {batches} batches: none shared a commit"
            );
        }
        let renewed: Vec<i64> = sqlx::query_scalar(
            "SELECT account_id FROM account_audit WHERE event = 'renewed' ORDER BY account_id",
        )
        .fetch_all(engine.pool())
        .await
        .unwrap();
        let others: Vec<i64> = ids.iter().copied().filter(|id| *id != faulty).collect();
        assert_eq!(renewed, others, "every outcome but the faulty one stored");
        let faulty_renewed_at: Option<i64> =
            sqlx::query_scalar("SELECT renewed_at FROM connected_accounts WHERE id = $1")
                .bind(faulty)
                .fetch_one(engine.pool())
                .await
                .unwrap();
        assert_eq!(faulty_renewed_at, None, "the faulty outcome was not stored");
    }

    #[test]
    fn renewals_are_due_a_margin_before_expiry_and_at_least_daily() {
        let now = 1_000_000;
        assert_eq!(next_due(now, Some(now + 600)), now + 300);
        assert_eq!(
            next_due(now, Some(now + 10)),
            now + 5,
            "short-lived: half the time left"
        );
        assert_eq!(
            next_due(now, Some(now - 5)),
            now - 5,
            "already expired: due now"
        );
        assert_eq!(next_due(now, Some(now + 3 * 86_400)), now + 86_400);
        assert_eq!(next_due(now, None), now + MAX_RENEWAL_INTERVAL);
        let waits: Vec<i64> = (0..9).map(backoff).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[tokio::test]
    async fn an_account_is_renewed_a_margin_before_expiry_and_the_rotated_token_is_kept() {
        let s = setup().await;
        let start = s.engine.now();
        assert_eq!(s.account.renew_due_at, Some(start + LIFETIME / 2));
        let (_, before) = s.stored().await;

        s.clock.advance(LIFETIME / 2 - 1);
        assert_eq!(s.run().await, 0, "not due yet");
        assert_eq!(s.sandbox.refreshes(), 0);
        s.clock.advance(1);
        assert_eq!(s.run().await, 1);
        assert_eq!(s.sandbox.refreshes(), 1);

        let (account, after) = s.stored().await;
        assert_ne!(after["refresh_token"], before["refresh_token"]);
        assert_ne!(after["access_token"], before["access_token"]);
        assert_eq!(account.renewed_at, Some(s.engine.now()));
        assert_eq!(account.renew_due_at, Some(s.engine.now() + LIFETIME / 2));
        assert_eq!(account.status, AccountStatus::Active);
        // The provider rotated the refresh token: the old one is spent, so only the stored
        // new one can renew from here on.
        let provider = s.engine.runner.providers.get("flameconnect").unwrap();
        let mut http = s.engine.runner.upstreams.session();
        assert_eq!(
            provider.renew(&mut http, s.engine.now(), &before).await,
            Health::Rejected
        );
        s.clock.advance(LIFETIME / 2);
        assert_eq!(s.run().await, 1);
        assert_eq!(s.stored().await.0.status, AccountStatus::Active);
    }

    #[tokio::test]
    async fn a_revoked_account_needs_sign_in_is_told_by_webhook_and_is_left_alone_until_then() {
        let s = setup().await;
        s.engine
            .webhooks()
            .set_url(s.user, "http://127.0.0.1:9/hook")
            .await
            .unwrap();
        s.sandbox.revoke(double::DEMO_EMAIL);
        s.clock.advance(LIFETIME / 2);
        assert_eq!(s.run().await, 1);
        let (account, _) = s.stored().await;
        assert_eq!(account.status, AccountStatus::NeedsSignIn);
        assert_eq!(account.renew_due_at, None);
        let told = s.engine.webhooks().deliveries(s.user, 10).await.unwrap();
        assert_eq!(told[0].event_type, "account.needs_sign_in");
        assert_eq!(
            s.engine.app_credentials(s.user, s.account.id).await,
            Err(ErrorCode::NeedsSignIn)
        );
        s.clock.advance(MAX_RENEWAL_INTERVAL);
        assert_eq!(s.run().await, 0);
        assert_eq!(s.sandbox.refreshes(), 1);
    }

    #[tokio::test]
    async fn an_unreachable_provider_degrades_the_account_and_backs_off() {
        let s = setup().await;
        s.sandbox.set_fault("refresh", Fault::Unavailable503);
        s.clock.advance(LIFETIME / 2);
        assert_eq!(s.run().await, 1);
        let (account, _) = s.stored().await;
        assert_eq!(account.status, AccountStatus::Degraded);
        assert_eq!(account.last_error, Some(ErrorCode::ServiceUnavailable));
        assert_eq!(account.renew_due_at, Some(s.engine.now() + backoff(0)));
        s.clock.advance(backoff(0));
        assert_eq!(s.run().await, 1);
        assert_eq!(
            s.stored().await.0.renew_due_at,
            Some(s.engine.now() + backoff(1)),
            "the wait doubles"
        );
        s.sandbox.clear_faults();
        s.clock.advance(backoff(1));
        assert_eq!(s.run().await, 1);
        let (account, _) = s.stored().await;
        assert_eq!(
            (account.status, account.last_error),
            (AccountStatus::Active, None)
        );
        assert_eq!(s.engine.accounts().renew_failures(account.id).await, Ok(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis_an_app_read_waits_while_another_instance_holds_the_renewal_lease() {
        let s = setup().await;
        let Some(url) = crate::test_support::test_redis_url() else {
            eprintln!("renewal lease in Redis: skipped, STEPGATE_TEST_REDIS_URL is not set");
            return;
        };
        // The engine's own Redis: the same URL under the prefix its test directory remembers.
        let prefix = crate::test_support::test_redis_prefix(s.dir.path());
        let redis = crate::store::redis::Redis::connect(&url, &prefix)
            .await
            .unwrap();
        let name = lease_name(s.account.id);
        s.clock.advance(LIFETIME - 60);
        let now = s.engine.now();
        // Another instance's app read holds the Redis lease (its renewal under way).
        assert!(
            lease_acquire(&redis, &name, "other-instance", now, now + LEASE_SECONDS)
                .await
                .unwrap()
        );
        let read = {
            let (engine, user, id) = (s.engine.clone(), s.user, s.account.id);
            tokio::spawn(async move { engine.app_credentials(user, id).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!read.is_finished(), "the read waits for the other instance");
        assert_eq!(s.sandbox.refreshes(), 0);
        // The other instance gives the lease back without having renewed (it died, say): the
        // waiting read takes over, renews once and gives the lease back in turn.
        assert!(lease_release(&redis, &name, "other-instance")
            .await
            .unwrap());
        let answer = read.await.unwrap().unwrap();
        assert!(answer["credentials"]["access_token"].is_string());
        assert_eq!(s.sandbox.refreshes(), 1);
        assert!(!lease_held(&redis, &name).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_credential_reads_share_one_refresh() {
        let s = setup().await;
        // Fresh tokens: a read renews nothing.
        let fresh = s
            .engine
            .app_credentials(s.user, s.account.id)
            .await
            .unwrap();
        assert!(fresh["credentials"]["access_token"].is_string());
        assert!(
            fresh["credentials"].get("refresh_token").is_none(),
            "never handed out"
        );
        assert_eq!(s.sandbox.refreshes(), 0);

        s.clock.advance(LIFETIME - 60);
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let (engine, user, id) = (s.engine.clone(), s.user, s.account.id);
                tokio::spawn(async move { engine.app_credentials(user, id).await })
            })
            .collect();
        let mut tokens = std::collections::HashSet::new();
        for read in reads {
            let answer = read.await.unwrap().unwrap();
            tokens.insert(
                answer["credentials"]["access_token"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(
            s.sandbox.refreshes(),
            1,
            "one upstream refresh for 50 reads"
        );
        assert_eq!(tokens.len(), 1, "every read got the renewed token");
        assert_ne!(
            tokens.into_iter().next(),
            fresh["credentials"]["access_token"]
                .as_str()
                .map(str::to_owned)
        );
    }

    #[tokio::test]
    async fn a_renewal_due_before_a_restart_runs_after_it_and_a_dead_workers_lease_runs_out() {
        let s = setup().await;
        let id = s.account.id;
        // A worker leases the account and dies before it renews it.
        let now = s.engine.now() + LIFETIME / 2;
        let leased = s
            .engine
            .accounts()
            .claim_due_renewals(
                now,
                now + LEASE_SECONDS,
                "a-worker-that-died",
                "flameconnect",
                10,
            )
            .await
            .unwrap();
        assert_eq!(leased.len(), 1);
        s.engine.pool().close().await;

        // The server starts again (a new engine on the same database, its clock at the start).
        let (engine, clock) = open(&s.dir, &s.sandbox).await;
        clock.advance(LIFETIME / 2);
        assert_eq!(
            engine.run_due_renewals().await.unwrap(),
            0,
            "the lease still holds"
        );
        clock.advance(LEASE_SECONDS + 1);
        assert_eq!(engine.run_due_renewals().await.unwrap(), 1);
        assert_eq!(s.sandbox.refreshes(), 1);
        let account = engine.accounts().get(s.user, id).await.unwrap();
        assert_eq!(account.renewed_at, Some(engine.now()));
        // The dead worker's late answer would not be stored: its lease is gone.
        let late = engine
            .accounts()
            .finish_renewal(
                &leased[0],
                "a-worker-that-died",
                &RenewalOutcome::Rejected,
                engine.now(),
            )
            .await;
        assert_eq!(late, Ok(false));
        assert_eq!(
            engine.accounts().get(s.user, id).await.unwrap().status,
            AccountStatus::Active
        );
    }
}
