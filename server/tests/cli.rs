//! The operator's commands through the real `stepgate` binary against temporary data folders:
//! `user …` and `invite`, and `backup` / `restore` (issue 20's acceptance: a backup taken while
//! sign-ins run, restored into an empty folder, opens every account, seed and key again).
//! The data is made and read back through the engine in this process, on the same files.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use engine::apps::webhook_destination::WebhookAllow;
use engine::second_factor::totp;
use engine::second_factor::totp_site::TotpSite;
use engine::sign_in::admin::{Admin, AdminAction, COMMAND_LINE_ACTOR};
use engine::sign_in::users::User;
use engine::{Completion, Engine, EngineConfig, Progress};

const KEY_HEX: &str = "4f1c6d0e9a7b3c2d5e8f1a0b4c7d2e6f9a3b5c8d1e4f7a0b2c6d9e3f5a8b1c4d";
const OTHER_KEY_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const PASSWORD: &str = "correct-horse-battery-staple-17";

/// `stepgate ARGS` with a clean environment for `data` and `key`; `stdin` piped in when given.
fn stepgate(data: &Path, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", data)
        .env("STEPGATE_DATA", data)
        .env("STEPGATE_KEY", key)
        .env("STEPGATE_REGISTRATION", "invite")
        .env("STEPGATE_PUBLIC_URL", "https://sg.example.org")
        .env("RUST_LOG", "error")
        // As `cargo leptos build` compiles it in (Leptos would say it lacks it on stderr).
        .env("LEPTOS_OUTPUT_NAME", "stepgate")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the stepgate binary runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn err(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Succeeded; its standard output.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        out(&output),
        err(&output)
    );
    out(&output)
}

/// Failed with one line on standard error; that line.
fn refused(output: Output) -> String {
    assert!(!output.status.success(), "stdout: {}", out(&output));
    let text = err(&output);
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    text.trim_end().to_owned()
}

fn key(hex: &str) -> engine::base::secrets::SecretKey {
    engine::base::secrets::SecretKey::from_hex(hex).unwrap()
}

async fn open_engine(data: &Path, key_hex: &str) -> Engine {
    let mut config = EngineConfig::new(
        engine::store::db::sqlite_url_in(data),
        key(key_hex),
        TotpSite {
            base_url: "http://127.0.0.1:9".into(),
            issuer: "Stepgate".into(),
        },
    );
    config.webhook_allow = WebhookAllow::parse("127.0.0.1").unwrap();
    Engine::open(config).await.unwrap()
}

/// A user with TOTP on; its seed and when its code was taken (a code is taken once).
async fn user_with_totp(engine: &Engine, email: &str) -> (User, Vec<u8>, i64) {
    let user = engine.register(email, PASSWORD, PASSWORD).await.unwrap();
    let enrollment = engine
        .two_factor()
        .begin_app_enrollment(user.id, email, engine.now())
        .await
        .unwrap();
    let seed = totp::base32_decode(&enrollment.secret_base32).unwrap();
    let at = engine.now();
    let code = totp::code_at(&seed, at, 6);
    engine
        .two_factor()
        .confirm_app_enrollment(user.id, &code, at)
        .await
        .unwrap();
    (user, seed, at)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The admin log, newest first, as (actor, action, target).
async fn audit(engine: &Engine) -> Vec<(String, AdminAction, Option<String>)> {
    Admin::new(
        engine.pool().clone(),
        std::sync::Arc::new(engine::base::clock::SystemClock),
    )
    .operator_audit_log(50)
    .await
    .unwrap()
    .into_iter()
    .map(|e| (e.admin_email, e.action, e.target_email))
    .collect()
}

#[tokio::test]
async fn user_commands_act_as_the_admin_page_does_and_are_logged_as_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let added = ok(stepgate(
        data,
        KEY_HEX,
        &["user", "add", "root@example.org", "--admin"],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(
        added.contains("Added root@example.org as an admin"),
        "{added}"
    );
    let weak = refused(stepgate(
        data,
        KEY_HEX,
        &["user", "add", "weak@example.org"],
        Some("password1234\n"),
    ));
    assert!(weak.contains("[password_too_weak]"), "{weak}");
    let taken = refused(stepgate(
        data,
        KEY_HEX,
        &["user", "add", "ROOT@example.org"],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(taken.contains("exists already"), "{taken}");

    let engine = open_engine(data, KEY_HEX).await;
    let (totp_user, ..) = user_with_totp(&engine, "totp@example.org").await;
    let session = engine.open_session(totp_user.id).await.unwrap();

    let listed = ok(stepgate(data, KEY_HEX, &["user", "list"], None));
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].starts_with("EMAIL") && lines[0].contains("LAST SIGN-IN"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("root@example.org") && lines[1].contains("yes"),
        "{listed}"
    );
    assert!(lines[2].starts_with("totp@example.org"), "{listed}");
    assert!(!listed.contains("$argon2"), "no secret is listed");

    let reset = ok(stepgate(
        data,
        KEY_HEX,
        &["user", "reset-2fa", "totp@example.org"],
        None,
    ));
    assert!(
        reset.contains("passkeys and recovery codes are removed"),
        "{reset}"
    );
    assert!(engine.totp_status(&totp_user).await.unwrap().is_none());
    assert_eq!(engine.session_user(&session).await.unwrap(), None);

    let session = engine.open_session(totp_user.id).await.unwrap();
    let (_, api_key) = engine
        .api_keys()
        .create(totp_user.id, "app", &[])
        .await
        .unwrap();
    let disabled = ok(stepgate(
        data,
        KEY_HEX,
        &["user", "disable", "totp@example.org"],
        None,
    ));
    assert!(disabled.contains("its sessions ended"), "{disabled}");
    assert_eq!(engine.session_user(&session).await.unwrap(), None);
    assert!(engine.authenticate_api_key(api_key.as_str()).await.is_err());
    let listed = ok(stepgate(data, KEY_HEX, &["user", "list"], None));
    let row = listed
        .lines()
        .find(|l| l.starts_with("totp@example.org"))
        .unwrap();
    assert_eq!(
        row.matches(" UTC").count(),
        2,
        "created and disabled: {listed}"
    );
    ok(stepgate(
        data,
        KEY_HEX,
        &["user", "enable", "totp@example.org"],
        None,
    ));
    assert!(engine.authenticate_api_key(api_key.as_str()).await.is_ok());

    let last = refused(stepgate(
        data,
        KEY_HEX,
        &["user", "disable", "root@example.org"],
        None,
    ));
    assert!(last.contains("[last_admin]"), "{last}");
    ok(stepgate(
        data,
        KEY_HEX,
        &["user", "make-admin", "totp@example.org"],
        None,
    ));
    assert!(engine.is_admin(&totp_user).await.unwrap());

    let invite = ok(stepgate(data, KEY_HEX, &["invite", "--days", "3"], None));
    let link = invite.lines().next().unwrap();
    let token = link
        .strip_prefix("https://sg.example.org/register?invite=")
        .unwrap_or_else(|| panic!("{invite}"));
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    let invited = engine
        .sign_up(engine::sign_in::registration::SignUp {
            mode: engine::sign_in::registration::RegistrationMode::Invite,
            email: "invited@example.org",
            password: PASSWORD,
            confirm: PASSWORD,
            invite: Some(token),
            address: None,
        })
        .await;
    assert!(invited.is_ok(), "the printed invite registers: {invited:?}");

    for args in [
        &["user", "disable", "nobody@example.org"][..],
        &["user", "enable", "nobody@example.org"],
        &["user", "reset-2fa", "nobody@example.org"],
        &["user", "make-admin", "nobody@example.org"],
    ] {
        let unknown = refused(stepgate(data, KEY_HEX, args, None));
        assert!(
            unknown.contains("no account has the email nobody@example.org [no_such_account]"),
            "{unknown}"
        );
    }

    let log = audit(&engine).await;
    assert!(
        log.iter().all(|(actor, ..)| actor == COMMAND_LINE_ACTOR),
        "{log:?}"
    );
    let acts: Vec<(AdminAction, Option<&str>)> = log
        .iter()
        .rev()
        .map(|(_, action, target)| (*action, target.as_deref()))
        .collect();
    assert_eq!(
        acts,
        [
            (AdminAction::AccountAdded, Some("root@example.org")),
            (AdminAction::AdminGranted, Some("root@example.org")),
            (AdminAction::SecondFactorReset, Some("totp@example.org")),
            (AdminAction::AccountDisabled, Some("totp@example.org")),
            (AdminAction::AccountEnabled, Some("totp@example.org")),
            (AdminAction::AdminGranted, Some("totp@example.org")),
            (AdminAction::InviteCreated, None),
        ]
    );
}

/// A one-request HTTP receiver on 127.0.0.1: its URL, and the request it got.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
    });
    (url, rx)
}

#[tokio::test]
async fn a_backup_taken_during_sign_ins_restores_into_an_empty_folder_and_everything_opens() {
    let live = tempfile::tempdir().unwrap();
    let engine = open_engine(live.path(), KEY_HEX).await;
    let (user, seed, enrolled_at) = user_with_totp(&engine, "owner@example.org").await;
    engine
        .register("plain@example.org", PASSWORD, PASSWORD)
        .await
        .unwrap();
    let account = engine
        .accounts()
        .add(
            user.id,
            "librus",
            &engine::providers::NewAccount {
                account_id: "parent-1".into(),
                display_name: "Parent".into(),
                secrets: serde_json::json!({"refresh_token": "rt-sealed-at-rest"}),
            },
            engine.now(),
        )
        .await
        .unwrap();
    let (_, api_key) = engine.api_keys().create(user.id, "app", &[]).await.unwrap();
    let (hook_url, received) = webhook_receiver();
    let hook_secret = engine.set_webhook_url(user.id, &hook_url).await.unwrap();

    // Password sign-ins write (sessions, throttle rows, last sign-in) until the backup is done.
    let backing_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let signing_in = tokio::spawn({
        let (engine, backing_up) = (engine.clone(), backing_up.clone());
        async move {
            let mut done = 0;
            while backing_up.load(std::sync::atomic::Ordering::SeqCst) || done == 0 {
                let progress = engine
                    .sign_in(None, "plain@example.org", PASSWORD, None)
                    .await
                    .unwrap();
                assert!(matches!(
                    progress,
                    Progress::Done(Completion::SignedIn { .. })
                ));
                done += 1;
            }
            done
        }
    });
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("stepgate.backup");
    let file_arg = file.to_str().unwrap().to_owned();
    let backup = tokio::task::spawn_blocking({
        let (data, file_arg) = (live.path().to_owned(), file_arg.clone());
        move || stepgate(&data, KEY_HEX, &["backup", &file_arg], None)
    })
    .await
    .unwrap();
    backing_up.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(signing_in.await.unwrap() > 0);
    let said = ok(backup);
    assert!(
        said.contains("2 accounts, 1 connected accounts, 1 API keys, 1 webhook endpoints"),
        "{said}"
    );
    assert!(said.contains("The key is not in the backup"), "{said}");
    let bytes = std::fs::read(&file).unwrap();
    let key_bytes = key(KEY_HEX).as_bytes().to_vec();
    for needle in [key_bytes.as_slice(), KEY_HEX.as_bytes()] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "no key in the backup"
        );
    }
    let again = refused(stepgate(live.path(), KEY_HEX, &["backup", &file_arg], None));
    assert!(again.contains("[file_exists]"), "{again}");

    // Another key: refused in one line, and nothing is written.
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = refused(stepgate(
        elsewhere.path(),
        OTHER_KEY_HEX,
        &["restore", &file_arg],
        None,
    ));
    assert!(wrong.contains("[wrong_key]"), "{wrong}");
    assert!(
        files_in(elsewhere.path()).is_empty(),
        "{:?}",
        files_in(elsewhere.path())
    );

    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("data");
    let restored = ok(stepgate(&target, KEY_HEX, &["restore", &file_arg], None));
    assert!(
        restored.contains("2 accounts, 1 connected accounts, 1 API keys, 1 webhook endpoints"),
        "{restored}"
    );
    let over = refused(stepgate(&target, KEY_HEX, &["restore", &file_arg], None));
    assert!(
        over.contains("--force") && over.contains("[database_exists]"),
        "{over}"
    );

    // Everything opens in the restored folder.
    let back = open_engine(&target, KEY_HEX).await;
    let flow = match back
        .sign_in(None, "owner@example.org", PASSWORD, None)
        .await
        .unwrap()
    {
        Progress::Next(view) => view.flow_id,
        other => panic!("the code step is asked for, not {other:?}"),
    };
    // A code is taken once, and the enrolment took its step's: wait for the next step if need be.
    while back.now() / 30 == enrolled_at / 30 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let code = totp::code_at(&seed, back.now(), 6);
    let input: engine::providers::Input = [("code".to_owned(), code)].into_iter().collect();
    let answer = back.submit_flow(&flow, None, &input).await;
    assert!(
        matches!(answer, Ok(Progress::Done(Completion::SignedIn { .. }))),
        "password and TOTP sign in: {answer:?}"
    );
    assert_eq!(
        back.accounts().secrets(user.id, account.id).await.unwrap(),
        serde_json::json!({"refresh_token": "rt-sealed-at-rest"})
    );
    assert_eq!(
        back.authenticate_api_key(api_key.as_str())
            .await
            .map(|caller| caller.user_id),
        Ok(user.id)
    );
    back.webhooks()
        .enqueue(user.id, "test.ping", &serde_json::json!({}), back.now())
        .await
        .unwrap();
    assert_eq!(back.deliver_webhooks_now().await.unwrap(), 1);
    let request = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let header = |name: &str| {
        request
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    let body = request.split_once("\r\n\r\n").unwrap().1;
    let expected = engine::apps::webhooks::sign(
        &engine::apps::webhooks::secret_key(hook_secret.as_str()).unwrap(),
        &header("webhook-id"),
        header("webhook-timestamp").parse().unwrap(),
        body,
    );
    assert_eq!(
        header("webhook-signature"),
        expected,
        "the webhook secret opens and signs"
    );
}

#[test]
fn on_postgres_backup_and_restore_name_pg_dump_and_pg_restore() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(args)
            .env_clear()
            .env("HOME", dir.path())
            .env("STEPGATE_DATA", dir.path())
            .env("STEPGATE_KEY", KEY_HEX)
            .env("LEPTOS_OUTPUT_NAME", "stepgate")
            .env(
                "DATABASE_URL",
                "postgres://stepgate:hunter2@127.0.0.1:1/stepgate",
            )
            .output()
            .unwrap()
    };
    let backup = refused(run(&["backup", "stepgate.dump"]));
    assert!(
        backup.contains("pg_dump --format=custom --file=stepgate.dump \"$DATABASE_URL\"")
            && backup.contains("pg_restore "),
        "{backup}"
    );
    assert!(!backup.contains("hunter2"), "{backup}");
    let restore = refused(run(&["restore", "stepgate.dump"]));
    assert!(restore.contains("pg_restore"), "{restore}");
    assert!(!dir.path().join("stepgate.dump").exists());
}
