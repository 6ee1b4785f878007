//! Several instances, one state: two [`Engine`]s opened on the same database (the SQLite file
//! of one test folder, or its Postgres database when `STEPGATE_TEST_DATABASE_URL` is set) and,
//! when `STEPGATE_TEST_REDIS_URL` is set, the same Redis prefix, as two servers behind a load
//! balancer without sticky sessions would be. Whatever one of them started, the other can go on
//! with; what must happen once happens once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::base::clock::{ManualClock, SystemClock};
use crate::flows::upstream::HttpSession;
use crate::providers::{Input, NewAccount, Provider, Purpose, Step, StepContext, StepError};
use crate::test_support::{
    connected, engine_in, engine_with, input, provider_config, register_owner, start, submit,
    test_config, user_with_totp, OWNER,
};
use crate::view::{FieldKind, FieldSpec, StepView};
use crate::{Completion, Engine, ErrorCode, Progress, SignInRefusal};

/// Two instances on the state of `dir`, each on its own manual clock (both at the same start).
async fn two_instances(dir: &tempfile::TempDir) -> [(Engine, ManualClock); 2] {
    [engine_in(dir).await, engine_in(dir).await]
}

fn next(progress: Result<Progress, ErrorCode>, what: &str) -> crate::view::FlowView {
    match progress {
        Ok(Progress::Next(view)) => view,
        other => panic!("{what}: a next step expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sign_in_with_totp_started_on_one_instance_finishes_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let [(a, clock_a), (b, clock_b)] = two_instances(&dir).await;
    let (user, secret) = user_with_totp(&a, "two@example.org").await;
    let credentials = input(&[
        ("email", "two@example.org"),
        ("password", "password-1-quiet-harbor"),
    ]);
    let view = next(
        start(&a, "local", Some("o".into()), &credentials).await,
        "the password",
    );
    // The page is reloaded through the other instance: the same step.
    assert_eq!(
        b.flow_view("local", &view.flow_id, Some("o")).await,
        Ok(view.clone())
    );
    clock_a.advance(30);
    clock_b.advance(30);
    // A wrong code on B counts on the flow A sees.
    assert_eq!(
        submit(&b, &view.flow_id, Some("o"), &input(&[("code", "000000")])).await,
        Err(ErrorCode::InvalidCode)
    );
    assert_eq!(
        a.flows
            .get(&view.flow_id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    let code = crate::second_factor::totp::code_at(&secret, b.now(), 6);
    assert_eq!(
        crate::test_support::signed_in_user(
            submit(&b, &view.flow_id, Some("o"), &input(&[("code", &code)])).await
        ),
        Some(user.id)
    );
    // Completed on B: gone on A too.
    assert_eq!(
        submit(&a, &view.flow_id, Some("o"), &input(&[("code", &code)])).await,
        Err(ErrorCode::FlowExpired)
    );
}

#[tokio::test]
async fn a_connected_account_flow_crosses_instances_step_by_step() {
    use sandbox::xiaomi::{self as double, XiaomiSandbox};

    let dir = tempfile::tempdir().unwrap();
    let sandbox = XiaomiSandbox::spawn().await;
    let mut engines = Vec::new();
    for _ in 0..2 {
        // The doubles keep real time, so the engines do too.
        let config = provider_config(dir.path(), &sandbox.upstreams()).await;
        engines.push(
            Engine::open_with_clock(config, Arc::new(SystemClock))
                .await
                .unwrap(),
        );
    }
    let (a, b) = (&engines[0], &engines[1]);
    let user_id = register_owner(a).await;
    let connect = Purpose::Connect { user_id };
    let step = |engine: &Engine, flow_id: String, pairs: Vec<(&'static str, String)>| {
        let engine = engine.clone();
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            engine
                .submit_flow(&flow_id, Some(OWNER), &input(&pairs))
                .await
        }
    };
    // A: the password; B: send the code; A: the code.
    let first = a
        .start_flow(
            "xiaomi",
            connect,
            Some(OWNER.into()),
            &input(&[
                ("username", double::DEMO_2FA_USER),
                ("password", double::DEMO_PASSWORD),
            ]),
        )
        .await;
    let two_factor = next(first.map_err(|e| e.code), "the password");
    let sent = step(b, two_factor.flow_id, vec![("action", "send_code".into())]).await;
    let code_step = next(sent.map_err(|e| e.code), "send the code");
    let code = sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
    let account = connected(step(a, code_step.flow_id, vec![("code", code)]).await);
    assert_eq!(account.display_name, double::DEMO_2FA_USER);
    // Stored once, seen by both.
    assert_eq!(b.accounts().get(user_id, account.id).await, Ok(account));
}

/// A provider whose last step takes a while (as an upstream answer does), so submits of one
/// flow on two instances overlap.
struct Slow;

/// The account the flow connects (from the first form).
#[derive(Serialize, Deserialize)]
struct SlowState(String);

#[async_trait]
impl Provider for Slow {
    type State = SlowState;
    fn name(&self) -> &'static str {
        "slow"
    }
    fn title(&self) -> &'static str {
        "Slow"
    }
    async fn check(
        &self,
        _http: &mut HttpSession,
        _now: i64,
        _secrets: &serde_json::Value,
    ) -> crate::providers::Health {
        crate::providers::Health::Accepted(None)
    }
    async fn renew(
        &self,
        _http: &mut HttpSession,
        _now: i64,
        _secrets: &serde_json::Value,
    ) -> crate::providers::Health {
        crate::providers::Health::Accepted(None)
    }
    fn expires_at(&self, _secrets: &serde_json::Value) -> Option<i64> {
        None
    }
    fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
        secrets.clone()
    }
    fn first_view(&self) -> StepView {
        StepView::form(vec![], "Connect")
    }
    async fn start(&self, _cx: &mut StepContext<'_>, input: &Input) -> Step<SlowState> {
        let account = input.get("account").cloned().unwrap_or_default();
        Step::Show {
            step: "code",
            view: StepView::form(
                vec![FieldSpec::new("code", "Code", FieldKind::Code)],
                "Verify",
            ),
            state: SlowState(account),
        }
    }
    async fn submit(
        &self,
        _cx: &mut StepContext<'_>,
        SlowState(account): SlowState,
        _input: &Input,
    ) -> Step<SlowState> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Step::Connected(NewAccount {
            account_id: account.clone(),
            display_name: account,
            secrets: serde_json::json!({"token": "t"}),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_flow_completed_concurrently_on_both_instances_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine_with(test_config(dir.path()).await)
        .await
        .0
        .with_provider(Slow);
    let b = engine_with(test_config(dir.path()).await)
        .await
        .0
        .with_provider(Slow);
    let user_id = register_owner(&a).await;
    for round in 0..3 {
        let flow = a
            .start_flow(
                "slow",
                Purpose::Connect { user_id },
                Some(OWNER.into()),
                &input(&[("account", &format!("account-{round}"))]),
            )
            .await;
        let flow_id = next(flow.map_err(|e| e.code), "start").flow_id;
        let tasks: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|engine| {
                let (engine, flow_id) = (engine.clone(), flow_id.clone());
                tokio::spawn(async move {
                    engine
                        .submit_flow(&flow_id, Some(OWNER), &input(&[("code", "x")]))
                        .await
                        .map_err(|e: StepError| e.code)
                })
            })
            .collect();
        let mut done = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Progress::Done(_)) => done += 1,
                // The flow was gone (another submit completed it), or the account it would
                // connect was there already (another submit stored it first).
                Err(ErrorCode::FlowExpired | ErrorCode::AlreadyConfigured) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            done, 1,
            "round {round}: exactly one submit completes the flow"
        );
        let accounts = b.accounts().list(user_id).await.unwrap();
        assert_eq!(
            accounts.len(),
            round + 1,
            "round {round}: one account more, never two"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_totp_code_sent_to_both_instances_at_once_signs_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let [(a, clock_a), (b, clock_b)] = two_instances(&dir).await;
    let (user, secret) = user_with_totp(&a, "race@example.org").await;
    let credentials = input(&[
        ("email", "race@example.org"),
        ("password", "password-1-quiet-harbor"),
    ]);
    let view = next(
        start(&a, "local", Some("o".into()), &credentials).await,
        "the password",
    );
    clock_a.advance(30);
    clock_b.advance(30);
    let code = crate::second_factor::totp::code_at(&secret, a.now(), 6);
    let tasks: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|engine| {
            let (engine, flow_id, code) = (engine.clone(), view.flow_id.clone(), code.clone());
            tokio::spawn(async move {
                submit(&engine, &flow_id, Some("o"), &input(&[("code", &code)])).await
            })
        })
        .collect();
    let mut signed_in = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(Progress::Done(Completion::SignedIn { user_id, .. })) => signed_in.push(user_id),
            // Another submit used the code, or completed the flow already, or (each submit is
            // counted as a guess before it is checked) the account's free tries were claimed.
            Err(ErrorCode::CodeUsed | ErrorCode::FlowExpired | ErrorCode::RateLimited) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(signed_in, [user.id], "exactly one sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_renewal_run_by_both_upkeeps_at_once_hits_the_upstream_once() {
    use sandbox::flameconnect::{self as double, FlameConnectSandbox};

    const LIFETIME: i64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = FlameConnectSandbox::spawn().await;
    sandbox.set_access_token_lifetime(Duration::from_secs(LIFETIME as u64));
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(engine_with(provider_config(dir.path(), &sandbox.upstreams()).await).await);
    }
    let [(a, clock_a), (b, clock_b)] = <[_; 2]>::try_from(instances).ok().unwrap();
    let advance = |seconds| {
        clock_a.advance(seconds);
        clock_b.advance(seconds);
    };
    let user_id = register_owner(&a).await;
    let account = connected(
        a.start_flow(
            "flameconnect",
            Purpose::Connect { user_id },
            Some(OWNER.into()),
            &input(&[
                ("email", double::DEMO_EMAIL),
                ("password", double::DEMO_PASSWORD),
            ]),
        )
        .await,
    );

    // Both upkeeps find the account due at the same moment.
    advance(LIFETIME / 2);
    let (ran_a, ran_b) = tokio::join!(a.run_due_renewals(), b.run_due_renewals());
    assert_eq!(ran_a.unwrap() + ran_b.unwrap(), 1);
    assert_eq!(sandbox.refreshes(), 1);
    assert_eq!(
        b.accounts()
            .get(user_id, account.id)
            .await
            .unwrap()
            .renewed_at,
        Some(b.now())
    );

    // Apps read the credentials through both instances as they are about to expire: one
    // refresh for all of them, and every read gets the renewed token.
    advance(LIFETIME - 60);
    let reads: Vec<_> = (0..20)
        .map(|n| {
            let engine = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { engine.app_credentials(user_id, account.id).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for read in reads {
        let answer = read.await.unwrap().unwrap();
        tokens.insert(answer["credentials"]["access_token"].to_string());
    }
    assert_eq!(
        sandbox.refreshes(),
        2,
        "one more refresh for 20 reads on two instances"
    );
    assert_eq!(tokens.len(), 1);
}

const WRONG: Result<(), SignInRefusal> = Err(SignInRefusal::Code(ErrorCode::InvalidAuth));

#[tokio::test]
async fn failed_passwords_on_one_instance_throttle_the_account_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let [(a, clock_a), (b, clock_b)] = two_instances(&dir).await;
    a.register(
        "t@example.org",
        "password-1-quiet-harbor",
        "password-1-quiet-harbor",
    )
    .await
    .unwrap();
    let address: Option<std::net::IpAddr> = Some("192.0.2.1".parse().unwrap());
    let try_on = |engine: &Engine, password: &'static str| {
        let engine = engine.clone();
        async move {
            engine
                .sign_in(None, "t@example.org", password, address)
                .await
                .map(|_| ())
        }
    };
    // Three failures spread over both instances start the wait...
    assert_eq!(try_on(&a, "nope-nope").await, WRONG);
    assert_eq!(try_on(&b, "nope-nope").await, WRONG);
    assert_eq!(try_on(&a, "nope-nope").await, WRONG);
    // ...which holds on either, even for the right password.
    for engine in [&a, &b] {
        assert_eq!(
            try_on(engine, "password-1-quiet-harbor").await,
            Err(SignInRefusal::Throttled { retry_after: 1 })
        );
    }
    clock_a.advance(1);
    clock_b.advance(1);
    // The owner signs in on B after the wait; the account starts over on A as well.
    assert!(try_on(&b, "password-1-quiet-harbor").await.is_ok());
    for _ in 0..3 {
        assert_eq!(try_on(&a, "nope-nope").await, WRONG);
    }
}
